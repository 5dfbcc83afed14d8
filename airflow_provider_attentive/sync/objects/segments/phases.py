"""The segments' own phases of a run: the segment check first, a mirror's guards, then removals after the rows.

Removals come last, after every add of the run has been planned: the people who left the model (mirror), and
the former identifiers of people whose new ones have been added. Before they go out, one pass over the sync's
state collects the identifiers of everyone who stays in the segment; a removal never names one of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from airflow_provider_attentive.client import EndpointName
from airflow_provider_attentive.sync.audience import MirrorGuard
from airflow_provider_attentive.sync.errors import SyncAborted
from airflow_provider_attentive.sync.object_type import Batch, Planned, Prepared, Run
from airflow_provider_attentive.sync.objects.segments.members import (
    ADDS,
    current,
    id_values,
    items_of,
    retired,
    valid_identity,
)
from airflow_provider_attentive.sync.objects.segments.segment import ensure_segment
from airflow_provider_attentive.sync.state import KNOWN_STATUSES, RowOutcome, StateRow
from airflow_provider_attentive.sync.values import mask_key

if TYPE_CHECKING:
    from airflow_provider_attentive.sync.objects.segments.type import SegmentsType

__all__ = ["SegmentPhases", "is_tracked"]


def is_tracked(row: StateRow) -> bool:
    """Whether the segment may have this row's person because of this sync: confirmed in it, or an add that
    failed without saying whether it landed (removing a non-member is harmless, keeping a stray one is not).
    Rows whose job is still running are left to the run that reads their results."""
    if row.status == "submitted":
        return False
    return row.member == "in_segment" or (row.op in ADDS and row.status == "failed")


def _staying(row: StateRow) -> bool:
    return row.member == "in_segment" or (row.op in ADDS and row.status in ("submitted", "failed", "pending"))


class SegmentPhases:
    """Per-run state and phases of a segments sync (created by ``SegmentsType.bind``)."""

    def __init__(self, obj: SegmentsType, run: Run) -> None:
        self.obj = obj
        self.run = run
        self.guard = MirrorGuard(run, verb="remove from the segment")
        self.tracked: set[str] | None = None  # mirror: who this sync may have put in the segment
        self.seen: set[str] = set()  # mirror: tracked people still in the model
        self.retiring: list[str] = []  # people added under new identifiers whose former ones are still to go

    # ---------------------------------------------------------------------------------------- phases ----

    def before_rows(self) -> None:
        run = self.run
        run.summary.extra["segment"] = ensure_segment(run, self.obj.segment)
        if self.obj.mode != "mirror":
            return
        state_ready = run.state_ready
        self.tracked = (
            {r.pk for r in run.state.iter_rows(run.options.sync_id) if is_tracked(r)} if state_ready else set()
        )
        if self.tracked and not run.options.dry_run:
            column = self.obj.columns[self.obj.key_index]
            self.guard.check_before_sending(self.tracked, column, self.obj.key_from_value)

    def observe(self, key: str) -> None:
        if self.tracked is not None and key in self.tracked:
            self.seen.add(key)

    def retire(self, key: str) -> None:
        self.retiring.append(key)

    def after_rows(self) -> None:
        run = self.run
        if run.halted:
            return
        leaving = sorted(self.tracked - self.seen) if self.tracked is not None else []
        if leaving:
            try:
                self.guard.check(len(self.tracked or ()), len(leaving), run.summary.rows_read)
            except SyncAborted as exc:
                if not run.options.dry_run:
                    raise
                # Go on listing who would be removed: that list is what the guard's message asks the user to check.
                run.log.warning("a live run would stop here: %s", exc)
        if not leaving and not self.retiring:
            return
        staying = self._staying_identifiers(set(leaving), self._named(leaving, self.retiring))
        run.dispatch(EndpointName.SEGMENT_MEMBERS_REMOVE, self._removals(leaving, self.retiring, staying))

    # ------------------------------------------------------------------------------------ removals ----

    def _named(self, leaving: list[str], retiring: list[str]) -> set[str]:
        """Every identifier the removals could name: the leavers' current and former ones, the retirees' former."""
        run = self.run
        values: set[str] = set()
        if not run.state_ready:
            return values
        for keys, former_only in ((leaving, False), (retiring, True)):
            for start in range(0, len(keys), 10_000):
                for st in run.state.lookup(run.options.sync_id, keys[start : start + 10_000]).values():
                    identity = _identity(st)
                    if identity is None:
                        continue
                    for ids in retired(identity) if former_only else [current(identity), *retired(identity)]:
                        values |= id_values(ids)
        return values

    def _staying_identifiers(self, leaving: set[str], named: set[str]) -> set[str]:
        """Of ``named``, the identifiers someone this sync keeps in the segment (or may have added) holds.

        One pass over the sync's state; only identifiers a removal could name are kept, so a mirror of millions
        holds a set the size of its removals, not of its audience.
        """
        run = self.run
        values: set[str] = set()
        if not run.state_ready or not named:
            return values
        for row in run.state.iter_rows(run.options.sync_id):
            if row.pk in leaving or not row.identity or not _staying(row):
                continue
            identity = _identity(row)
            if identity is not None:
                values |= id_values(current(identity)) & named
        return values

    def _removals(self, leaving: list[str], retiring: list[str], staying: set[str]) -> Iterator[Batch]:
        run = self.run
        size = run.send_batch_size
        work = [(key, "removed") for key in leaving] + [(key, "retired") for key in retiring]
        for start in range(0, len(work), size):
            chunk = work[start : start + size]
            rows = run.state.lookup(run.options.sync_id, [key for key, _ in chunk]) if run.state_ready else {}
            items: list[Planned] = []
            settled: list[RowOutcome] = []
            for key, op in chunk:
                st = rows.get(key)
                if st is None or not st.identity:
                    continue
                planned = self._removal(key, op, st, staying, settled)
                if planned is not None:
                    items.append(planned)
            if settled and not run.options.dry_run:
                run.write_outcomes(settled)
            yield Batch(items, set(rows))

    def _removal(self, key: str, op: str, st: StateRow, staying: set[str], settled: list[RowOutcome]) -> Planned | None:
        run = self.run
        identity = _identity(st)
        if st.status not in KNOWN_STATUSES or identity is None:
            # Removing on a guess cannot be checked afterwards: hold, and say where to look.
            run.summary.held_unknown_state += 1
            run.summary.error(
                mask_key(key),
                f"not removed from the segment: its state row has a status or identity this version never writes; "
                f"fix or delete it in {run.state.state_table}",
            )
            return None
        ids = current(identity)
        kept_current = op == "retired" or bool(id_values(ids) & staying)
        former = [s for s in retired(identity) if not id_values(s) & staying]
        new_identity: dict[str, Any] = dict(ids)
        if former:
            new_identity["retired"] = former
        if op == "removed" and kept_current:
            new_identity["kept"] = True
        attempt_hash = (st.attempt_hash if op == "retired" else st.row_hash or st.attempt_hash) or ""
        if not items_of(op, new_identity):
            # Everything it would name is held by someone who stays: the segment is already right for this row.
            run.summary.extra["kept_shared"] += 1
            run.summary.succeeded[op] += 1
            settled.append(
                RowOutcome(
                    pk=key,
                    op=op,
                    status="ok",
                    message="its identifiers are shared with someone who stays in the segment: none removed",
                    member="out_of_segment" if op == "removed" else None,
                    identity=json.dumps(ids, sort_keys=True),
                    log_key=mask_key(key),
                )
            )
            return None
        run.summary.planned[op] += 1
        prepared = Prepared(payload={}, identity=new_identity)
        body = self.obj.body(op, prepared)
        run.sample(body, key, op)
        return Planned(key, op, attempt_hash, prepared, body)


def _identity(row: StateRow) -> dict[str, Any] | None:
    """A state row's identity, or None when it is missing or not one this version writes."""
    try:
        identity: Any = json.loads(row.identity or "")
    except ValueError:
        return None
    return identity if valid_identity(identity) else None
