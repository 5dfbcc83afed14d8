"""The run summary: the operator's return value (XCom), and the table at the end of the task log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_provider_attentive.sync.values import mask_key, mask_payload, mask_text

__all__ = ["Summary", "render_table"]

OPS = ("added", "changed", "removed")
MAX_ERRORS = 20
DRY_RUN_KEYS = 1000  # keys listed per operation in a dry-run summary (counts are always exact)
# Invalid rows are counted per reason, every one of them; a reason that quotes its value (a bad timestamp) could
# make one reason per row, so past this many distinct reasons the rest are counted together.
MAX_REASONS = 50
OTHER_REASON = "other"
REASON_EXAMPLES = 5  # masked keys kept per reason
# What the log says under the table when a counter is not zero, for the counters whose name alone does not.
NOTES = {
    "stale": (
        "{n} event(s) older than 12 hours: Attentive stores them but starts no journey for them. They are sent "
        "unless skip_stale=True, which drops them."
    ),
}


def _ops() -> dict[str, int]:
    return dict.fromkeys(OPS, 0)


@dataclass
class Summary:
    """Counts for one run. ``planned`` rows are those that needed a request; each ends in ``succeeded``,
    ``failed`` (``rejected`` ones included), ``in_doubt`` or ``remaining`` (budget reached)."""

    sync_id: str
    object_type: str
    mode: str
    dry_run: bool
    run_id: str
    rows_read: int = 0
    invalid: int = 0
    unchanged: int = 0
    planned: dict[str, int] = field(default_factory=_ops)
    succeeded: dict[str, int] = field(default_factory=_ops)
    failed: dict[str, int] = field(default_factory=_ops)
    rejected: int = 0
    skipped_rejected: int = 0
    in_doubt: int = 0
    remaining: int = 0
    # Rows whose state row this version does not recognise (hand-edited, another version, damaged): nothing is
    # sent for them until the row is fixed.
    held_unknown_state: int = 0
    # Rows not sent because their previous delivery has not answered yet (a bulk job still running): sending a
    # newer value now could let the older one land after it.
    awaiting_job: int = 0
    # Answers that arrived in this run for rows an earlier run sent (bulk jobs), by outcome.
    reconciled: dict[str, int] = field(default_factory=lambda: {"ok": 0, "rejected": 0, "failed": 0})
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    duration_s: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)
    # Rows sent, but not exactly as written (an invalid email dropped beside a valid phone): said per row.
    warnings: int = 0
    warning_samples: list[dict[str, Any]] = field(default_factory=list)
    # reason -> {"count": every invalid row with it, "examples": the first few masked keys}
    invalid_reasons: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    would_send: dict[str, list[str]] = field(default_factory=dict)

    def count_ops(self, ops: tuple[str, ...]) -> None:
        """Count these operations (an object type with one of its own: a segment's former identifiers)."""
        for counts in (self.planned, self.succeeded, self.failed):
            for op in ops:
                counts.setdefault(op, 0)

    def warn(self, key: str, note: str) -> None:
        self.warnings += 1
        if len(self.warning_samples) < MAX_ERRORS:
            self.warning_samples.append({"key": key, "note": note})

    def invalid_row(self, key: str, reason: str) -> None:
        """Count one row that cannot be sent: in ``invalid``, under its reason, and among the error samples.

        ``key`` is already masked.
        """
        self.invalid += 1
        self.error(key, reason)
        if reason not in self.invalid_reasons and len(self.invalid_reasons) >= MAX_REASONS:
            reason = OTHER_REASON
        tally = self.invalid_reasons.setdefault(reason, {"count": 0, "examples": []})
        tally["count"] += 1
        if len(tally["examples"]) < REASON_EXAMPLES:
            tally["examples"].append(key)

    def error(self, key: str, reason: str, status: int | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            item: dict[str, Any] = {"key": key, "reason": mask_text(reason)}
            if status is not None:
                item["http_status"] = status
            self.errors.append(item)

    def sample(self, payload: dict[str, Any], key: str, op: str, max_samples: int) -> None:
        """Keep a few masked payloads and the (masked) keys each operation would touch (dry runs)."""
        if len(self.samples) < max_samples:
            self.samples.append(mask_payload(payload))
        keys = self.would_send.setdefault(op, [])
        if len(keys) < DRY_RUN_KEYS:
            keys.append(mask_key(key))

    def total(self, counts: dict[str, int]) -> int:
        return sum(counts.values())

    def _reasons(self) -> list[dict[str, Any]]:
        """The invalid rows' reasons, most frequent first (``other`` last), each with its count and examples."""
        ranked = sorted(self.invalid_reasons.items(), key=lambda item: (item[0] == OTHER_REASON, -item[1]["count"]))
        return [{"reason": r, "count": t["count"], "examples": list(t["examples"])} for r, t in ranked]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sync_id": self.sync_id,
            "object_type": self.object_type,
            "mode": self.mode,
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "rows_read": self.rows_read,
            "invalid": self.invalid,
            "unchanged": self.unchanged,
            "planned": dict(self.planned),
            "succeeded": dict(self.succeeded),
            "failed": dict(self.failed),
            "rejected": self.rejected,
            "skipped_rejected": self.skipped_rejected,
            "in_doubt": self.in_doubt,
            "remaining": self.remaining,
            "held_unknown_state": self.held_unknown_state,
            "awaiting_job": self.awaiting_job,
            "reconciled": dict(self.reconciled),
            "requests": self.requests,
            "retries": self.retries,
            "throttled": self.throttled,
            "duration_s": round(self.duration_s, 3),
            "errors": list(self.errors),
            "warnings": self.warnings,
            "warning_samples": list(self.warning_samples),
            "invalid_reasons": self._reasons(),
        }
        out.update(self.extra)
        if self.dry_run:
            out["samples"] = list(self.samples)
            out["would_send"] = {op: list(keys) for op, keys in self.would_send.items()}
        return out


def render_table(summary: dict[str, Any]) -> str:
    """A fixed-width table for the end of the task log, readable without opening XCom.

    Below it: what the counters that need a word mean (``stale``), and the invalid rows by reason.
    """
    planned, ok, bad = summary["planned"], summary["succeeded"], summary["failed"]
    rows: list[tuple[str, str]] = [
        (
            "sync",
            f"{summary['sync_id']} ({summary['object_type']}, {summary['mode']})"
            + (" DRY RUN" if summary["dry_run"] else ""),
        ),
        ("read", str(summary["rows_read"])),
        ("unchanged", str(summary["unchanged"])),
    ]
    for op in planned:
        rows.append((op, f"{ok[op]} ok / {bad[op]} failed / {planned[op]} planned"))
    rows += [
        ("invalid", str(summary["invalid"])),
        ("sent with warnings", str(summary.get("warnings", 0))),
        ("rejected", str(summary["rejected"])),
        # Counted in "unchanged": shown apart so that rows Attentive refused earlier do not pass for synced ones.
        ("rejected before, not resent", str(summary.get("skipped_rejected", 0))),
        ("in doubt", str(summary["in_doubt"])),
        ("remaining", str(summary["remaining"])),
    ]
    reconciled = summary.get("reconciled") or {}
    if any(reconciled.values()):
        # Answers for rows an earlier run sent (bulk jobs that finished since): not in the lines above.
        rows.append(
            (
                "earlier jobs' rows",
                f"{reconciled.get('ok', 0)} ok / {reconciled.get('rejected', 0)} rejected / "
                f"{reconciled.get('failed', 0)} failed",
            )
        )
    for name in (
        "stale",
        "ignored_changes",
        "already_subscribed",
        "shared_phones",
        "names_written",
        "nothing_to_send",
        "blocked_removals",
        "held_removals",
        "segment",
        "retired_identifiers",
        "kept_shared",
        "bulk_jobs_submitted",
        "bulk_jobs_completed",
        "bulk_jobs_pending",
        "awaiting_results",
    ):
        if name in summary:
            rows.append((name.replace("_", " "), str(summary[name])))
    rows += [
        ("requests", str(summary["requests"])),
        ("retries", str(summary["retries"])),
        ("throttled", str(summary["throttled"])),
        ("duration", f"{summary['duration_s']:.1f}s"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * (max(len(v) for _, v in rows) + 2) + "+"
    body = [f"| {k.ljust(width)} | {v.ljust(len(line) - width - 7)} |" for k, v in rows]
    return "\n".join([line, *body, line, *_notes(summary), *_invalid_lines(summary)])


def _notes(summary: dict[str, Any]) -> list[str]:
    return [f"{name}: {text.format(n=summary[name])}" for name, text in NOTES.items() if summary.get(name)]


def _invalid_lines(summary: dict[str, Any]) -> list[str]:
    """``52 rows: phone is not ... (e.g. 17, 23, ...)`` per reason: what to fix, in the log itself."""
    reasons = summary.get("invalid_reasons") or []
    if not reasons:
        return []
    width = len(str(max(r["count"] for r in reasons)))
    lines = ["invalid rows by reason (masked keys of the first rows):"]
    for r in reasons:
        examples = ", ".join(r["examples"]) + (", ..." if r["count"] > len(r["examples"]) else "")
        rows = "row: " if r["count"] == 1 else "rows:"
        lines.append(f"  {str(r['count']).rjust(width)} {rows} {r['reason']} (e.g. {examples})")
    return lines
