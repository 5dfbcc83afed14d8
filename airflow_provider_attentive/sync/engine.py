"""The sync engine: source -> mapping -> validate -> plan -> send -> record, with no Airflow imports.

One run, in order:

1. take the per-sync lock in the state store (two runs of one sync never send at once);
2. settle rows a previous run left *pending* (intent written, no outcome: the process died mid-request);
3. check the model's primary key in the warehouse (NULL or duplicate keys fail before anything is sent);
4. for a mirror with tracked members, read the model once without sending to apply the removal guards;
5. stream the model in chunks: hash each row, look its key up in the state table, and send only rows that
   are new, changed, or failed last time. Before each batch is handed to the transport the engine writes
   the batch's *intents*; outcomes are written in batches as answers arrive (write-ahead, so a crash leaves
   at most one batch plus what was in flight in doubt);
6. mirror removals, in-doubt resolution, subscriber names; then the summary.

The engine talks to Attentive through anything with ``send_many(endpoint, requests)`` (the transport) and
to databases through DB-API connections, so it is tested without Airflow.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_attentive.hooks.transport import Outcome as HttpOutcome
from airflow_provider_attentive.hooks.transport import Request, Result
from airflow_provider_attentive.sync.errors import (
    AttentiveAuthError,
    AttentiveUnavailable,
    RunStopped,
    SyncAborted,
    SyncConfigError,
    SyncConfigStop,
    SyncLockedError,
    TooManyFailures,
)
from airflow_provider_attentive.sync.objects import (
    AttributesType,
    EventsType,
    Invalid,
    ObjectType,
    Prepared,
    SubscriptionsType,
    key_text,
)
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.state import Intent, Outcome, StateRow, StateStore
from airflow_provider_attentive.sync.summary import Summary, render_table
from airflow_provider_attentive.sync.values import mask_key, mask_payload

KEY_MAX = 500  # the state table's pk column is VARCHAR(500)
DRY_RUN_KEYS = 1000  # keys listed per operation in a dry-run summary (counts are always exact)
MODES = {"attributes": ("upsert",), "events": ("insert",), "subscriptions": ("add", "remove", "mirror")}


class Sender(Protocol):
    """What the engine needs from the transport (``AttentiveTransport`` / ``AttentiveHook``)."""

    def send_many(self, endpoint_name: str, requests: Any) -> Iterator[Result]: ...


@dataclass
class SyncOptions:
    """Run-level options shared by every object type."""

    sync_id: str
    run_id: str = ""
    mode: str = ""  # empty: the object type's only/first mode (upsert, insert, add)
    dry_run: bool = False
    max_failed_ratio: float = 0.1
    chunk_size: int = 1000
    batch_size: int = 100
    flush_interval_s: float = 1.0
    resend_in_doubt: bool = False
    max_removals: int | float = 0.2
    allow_empty_source: bool = False
    max_rows_per_run: int | None = None
    max_runtime_s: float | None = None
    lock_ttl_s: float = 300.0
    lock_wait_s: float = 60.0
    log_retention_days: int | None = 30
    progress_interval_s: float = 10.0
    check_primary_key: bool = True
    dry_run_samples: int = 5
    # A run whose last N requests all failed after their retries stops (circuit breaker): against an
    # unreachable Attentive each row would otherwise cost max_attempts tries and backoff, hours for a big model.
    max_consecutive_failures: int = 50

    def __post_init__(self) -> None:
        if not self.sync_id or len(self.sync_id) > 250:
            raise SyncConfigError("sync_id must be 1-250 characters")
        if not self.run_id:
            self.run_id = f"run-{uuid.uuid4().hex[:12]}"
        if len(self.run_id) > 200:  # state columns are VARCHAR(250) and the lock holder adds a suffix
            digest = hashlib.blake2b(self.run_id.encode(), digest_size=6).hexdigest()
            self.run_id = f"{self.run_id[:187]}~{digest}"
        if not 0 <= self.max_failed_ratio <= 1:
            raise SyncConfigError(f"max_failed_ratio must be between 0 and 1, got {self.max_failed_ratio!r}")
        if isinstance(self.max_removals, bool) or not isinstance(self.max_removals, int | float):
            raise SyncConfigError("max_removals must be an int (count) or a float (share of tracked members)")
        if isinstance(self.max_removals, float) and not 0 <= self.max_removals <= 1:
            raise SyncConfigError("max_removals as a float is a share of tracked members: between 0.0 and 1.0")
        if self.max_removals < 0:
            raise SyncConfigError("max_removals must not be negative")
        if self.batch_size < 1 or self.chunk_size < 1:
            raise SyncConfigError("batch_size and chunk_size must be positive")
        if self.max_rows_per_run is not None and self.max_rows_per_run < 0:
            raise SyncConfigError("max_rows_per_run must be positive")


@dataclass
class _Pending:
    """Bookkeeping for one request between intent and outcome."""

    pk: str
    op: str
    attempt_hash: str
    prepared: Prepared | None


class SyncEngine:
    """Runs one sync of one object type. Create one per run.

    :param obj: the object type (attributes, events or subscriptions), configured with its mapping.
    :param options: run options.
    :param source: the model.
    :param state: the state store (its connection may be the source's).
    :param sender: the Attentive transport.
    :param log: where progress and warnings go (the task log under Airflow).
    """

    def __init__(
        self,
        obj: ObjectType,
        options: SyncOptions,
        *,
        source: SqlSource,
        state: StateStore,
        sender: Sender,
        log: logging.Logger | None = None,
        stats: Any = None,
    ) -> None:
        if not options.mode:
            options.mode = MODES[obj.object_type][0]
        if options.mode not in MODES[obj.object_type]:
            raise SyncConfigError(
                f"mode {options.mode!r} is not valid for {obj.object_type}; use one of {MODES[obj.object_type]}"
            )
        self.obj = obj
        self.opt = options
        self.source = source
        self.state = state
        self.sender = sender
        self.log = log or logging.getLogger("airflow_provider_attentive.sync")
        self.stats = stats if stats is not None else getattr(sender, "stats", None)
        self.summary = Summary(
            sync_id=options.sync_id,
            object_type=obj.object_type,
            mode=options.mode,
            dry_run=options.dry_run,
            run_id=options.run_id,
        )
        if isinstance(obj, AttributesType):
            self.summary.extra.update(nothing_to_send=0)
        if isinstance(obj, EventsType):
            self.summary.extra.update(stale=0, ignored_changes=0)
        if isinstance(obj, SubscriptionsType):
            self.summary.extra.update(
                already_subscribed=0, shared_phones=0, blocked_removals=0, held_removals=0, names_written=0
            )
        self._state_ready = False
        self._outcomes: list[Outcome] = []
        self._last_flush = time.monotonic()
        self._started = time.monotonic()
        self._last_progress = self._started
        self._sent = 0
        self._done = 0
        self._budget_hit = False
        self._unreadable_pks: set[str] = set()
        self._model_emails: set[str] = set()  # mirror: an email still in the model keeps its EMAIL subscription
        self._halt: RunStopped | None = None  # set when no further request can succeed; checked per batch
        self._consecutive_failures = 0
        # Before subscribing, ask whether the person already is (needs subscriptions:read): a repeated subscribe
        # makes Attentive text them "you are already subscribed". Off for the run at the first 403.
        self._precheck = isinstance(obj, SubscriptionsType)
        self._lock_holder = f"{options.run_id}:{uuid.uuid4().hex[:8]}"
        self._followups: list[tuple[Request, str]] = []  # name attributes to write, with the hash they confirm
        self._stats_start = self._stats_snapshot()

    # ------------------------------------------------------------------------------------------ run ----

    def run(self) -> dict[str, Any]:
        """Run the sync and return the summary dict; raise when a guard or the failure ratio says so."""
        opt = self.opt
        locked = False
        try:
            if not opt.dry_run:
                self.state.ensure_tables()
                self._state_ready = True
                self.state.acquire_lock(opt.sync_id, self._lock_holder, ttl_s=opt.lock_ttl_s, wait_s=opt.lock_wait_s)
                locked = True
            else:
                self._state_ready = self._tables_exist()
            columns = self.source.columns()
            self.obj.configure(columns)
            if opt.check_primary_key:
                self.source.check_primary_key(self.obj.columns[self.obj.pk_index])
            self._settle_pending()
            self._resolve_in_doubt()
            members = self._members() if opt.mode == "mirror" else None
            if members and not opt.dry_run:
                # Guards first: a live mirror reads the model once without sending, so that a model that
                # lost most of its rows stops the run before any subscribe or unsubscribe goes out.
                seen = self._scan_keys(members)
                self._check_removal_guards(len(members), len(members - seen), self.summary.rows_read)
                self.summary.rows_read = 0
            seen_members = self._send_rows(members)
            if members is not None and self._halt is None:
                self._mirror_removals(members, seen_members)
            if self._halt is None:
                self._resolve_in_doubt()
                self._send_followups()
            self._flush(force=True)
            if not opt.dry_run and opt.log_retention_days:
                self.state.prune_log(
                    opt.sync_id, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=opt.log_retention_days)
                )
        except BaseException:
            # A failed statement (e.g. the warehouse erroring mid-stream on a shared PostgreSQL connection)
            # aborts the transaction; roll back so the outcomes below are still recorded.
            self._rollback_state()
            raise
        finally:
            try:
                self._flush(force=True)
            finally:
                if locked:
                    self.state.release_lock(opt.sync_id, self._lock_holder)
        return self._finish()

    def partial_summary(self) -> dict[str, Any]:
        """The summary so far, for a run that stopped with an error before it finished."""
        s = self.summary
        stats = self._stats_snapshot()
        s.requests = stats["requests"] - self._stats_start["requests"]
        s.retries = stats["retries"] - self._stats_start["retries"]
        s.throttled = stats["throttled"] - self._stats_start["throttled"]
        s.duration_s = time.monotonic() - self._started
        return s.as_dict()

    def _finish(self) -> dict[str, Any]:
        s = self.summary
        result = self.partial_summary()
        self.log.info("Attentive sync summary:\n%s", render_table(result))
        if self._halt is not None:
            self._halt.summary = result
            raise self._halt
        invalid_ratio = s.invalid / s.rows_read if s.rows_read else 0.0
        attempted = s.total(s.succeeded) + s.total(s.failed)
        failed_ratio = s.total(s.failed) / attempted if attempted else 0.0
        if not self.opt.dry_run and (
            invalid_ratio > self.opt.max_failed_ratio or failed_ratio > self.opt.max_failed_ratio
        ):
            raise TooManyFailures(
                f"{s.invalid} of {s.rows_read} rows invalid ({invalid_ratio:.1%}) and {s.total(s.failed)} of "
                f"{attempted} sends failed ({failed_ratio:.1%}); max_failed_ratio is {self.opt.max_failed_ratio:.1%}. "
                "Every outcome was recorded; see the summary's errors and the sync log table.",
                result,
            )
        return result

    # --------------------------------------------------------------------------------- the stream ----

    def _send_rows(self, members: set[str] | None) -> set[str]:
        """Stream the model, sending what changed. Returns the member keys seen in the model (mirror)."""
        seen: set[str] = set()
        endpoint = "unsubscribe" if self.opt.mode == "remove" else self.obj.endpoint
        pending: dict[str, _Pending] = {}
        requests = self._requests(members, seen, pending)
        if self.opt.dry_run:
            for _ in requests:
                pass
            return seen
        for result in self.sender.send_many(endpoint, requests):
            self._record(result, pending.pop(str(result.key)))
        return seen

    def _requests(self, members: set[str] | None, seen: set[str], pending: dict[str, _Pending]) -> Iterator[Request]:
        """Classify the model chunk by chunk and yield the requests to send, writing intents first."""
        first_chunk = True
        shared_ok = self.obj.shared_keys_allowed
        handled: set[str] = set()  # subscribers decided this run (a set of phones: audiences, not event logs)
        for _, rows in self.source.stream():
            self.summary.rows_read += len(rows)
            if first_chunk and (cards := self.obj.card_columns(rows)):
                raise SyncConfigError(
                    "columns that look like payment card numbers, which Attentive's terms prohibit: "
                    + ", ".join(cards)
                    + "; nothing was sent. If they are not card numbers, allow them with allow_sensitive_columns=[...]."
                )
            keyed: list[tuple[str, Sequence[Any]]] = []
            for row in rows:
                key = self.obj.key_of(row)
                if key is None:
                    self._invalid(*self.obj.key_problem(row))
                    if members is not None and row[self.obj.pk_index] is not None:
                        # Still in the model, with a phone we cannot read this run (a typo): its member, if
                        # any, must not be unsubscribed as "left the model".
                        self._unreadable_pks.add(key_text(row[self.obj.pk_index]))
                    continue
                if len(key) > KEY_MAX:
                    self._invalid(key[:40] + "...", f"primary key is longer than {KEY_MAX} characters")
                    continue
                keyed.append((key, row))
                if members is not None and key in members:
                    seen.add(key)
                if members and isinstance(self.obj, SubscriptionsType) and (email := self.obj.email_of(row)):
                    self._model_emails.add(email)
            known = self._lookup([k for k, _ in keyed])
            batch: list[tuple[_Pending, Request]] = []
            batched: set[str] = set()
            sensitive: list[str] = []
            for key, row in keyed:
                st = known.get(key)
                if shared_ok:
                    # A subscriber is decided once per run, by the first of its rows: a second row with the
                    # same phone in a later chunk must not be classified again (its first request may have
                    # ended in doubt or been skipped as rejected), and a dry run must count it the same way.
                    if key in handled:
                        self.summary.extra["shared_phones"] += 1
                        continue
                    handled.add(key)
                if key in batched or (st is not None and st.status == "pending" and st.run_id == self.opt.run_id):
                    # Distinct warehouse values can share one key text (1 and '1' in a SQLite column), which the
                    # warehouse check cannot see: a second intent in this chunk would fail the run, and a second
                    # request while the first is in flight (its intent is this run's) races with it.
                    if self.obj.shared_keys_allowed:
                        # Two rows, one subscriber (customers sharing a phone): subscribed once.
                        self.summary.extra["shared_phones"] += 1
                    else:
                        self._invalid(key, "primary key appears twice in the model")
                    continue
                decision = self._classify(key, row, st)
                if decision is None:
                    continue
                op, attempt_hash = decision
                prepared = self.obj.prepare(row, key)
                if isinstance(prepared, Invalid) and prepared.empty:
                    self.summary.extra["nothing_to_send"] += 1
                    continue
                if isinstance(prepared, Invalid):
                    if prepared.sensitive:
                        sensitive.append(f"{mask_key(key)}: {prepared.reason}")
                    self._invalid(key, prepared.reason)
                    continue
                if prepared.note:
                    self.log.warning("row %s: %s", mask_key(key), prepared.note)
                    self.summary.warn(mask_key(key), prepared.note)
                if not self._count_planned(op, prepared):
                    continue
                batched.add(key)
                body = prepared.payload
                if op == "removed" and isinstance(self.obj, SubscriptionsType):
                    body = self.obj.unsubscribe_body(prepared.identity)
                item = _Pending(key, op, attempt_hash, prepared)
                batch.append((item, Request(key=key, body=body)))
                self._sample(body, key, op)
            if first_chunk and sensitive:
                raise SyncConfigError(
                    "the first rows hold values that look like sensitive data Attentive's terms prohibit; nothing "
                    "was sent. Examples: " + "; ".join(sensitive[:3]) + ". If these columns are not sensitive, "
                    "allow them with allow_sensitive_columns=[...]."
                )
            first_chunk = False
            for start in range(0, len(batch), self.opt.batch_size):
                part = batch[start : start + self.opt.batch_size]
                # The budget is checked here, as the transport pulls each batch, not when the chunk is
                # classified: a chunk is classified all at once, long before its last batch goes out.
                part = part[: self._within_budget(len(part))]
                if not part:
                    continue
                if not self.opt.dry_run:
                    self._hold_lock()
                    self.state.write_intents(
                        self.opt.sync_id,
                        self.opt.run_id,
                        [Intent(p.pk, p.op, p.attempt_hash, _identity(p.prepared)) for p, _ in part],
                        set(known),
                    )
                    part = self._skip_already_subscribed(part)
                for item, request in part:
                    pending[item.pk] = item
                    self._sent += 1
                    yield request
            self._progress()

    def _classify(self, key: str, row: Sequence[Any], st: StateRow | None) -> tuple[str, str] | None:
        """Return ``(operation, hash)`` when the row must be sent, else count why not and return None."""
        s = self.summary
        row_hash = self.obj.row_hash(row)
        status = st.status if st else None
        if status == "pending":  # only seen in a dry run: a live run settles pending rows first
            status = "failed" if isinstance(self.obj, AttributesType) else "in_doubt"
        if isinstance(self.obj, SubscriptionsType):
            target = "unsubscribed" if self.opt.mode == "remove" else "subscribed"
            op = "removed" if self.opt.mode == "remove" else "added"
            # ``member`` only changes on a confirmed success, and a failed or rejected request changed nothing,
            # so the person is still a member as recorded. (Someone whose unsubscribe failed and who came back
            # into the model is still subscribed: subscribing them again would text them.)
            done = (target, "preexisting") if target == "subscribed" else (target,)
            if st is not None and st.member in done and status in ("ok", "failed", "rejected"):
                if status == "ok" and target == "subscribed" and self._writes_names() and st.row_hash != row_hash:
                    # Subscribed, but the names of this row were never written (a stop or a crash came first)
                    # or have changed: write them, without subscribing again.
                    prepared = self.obj.prepare(row, key)
                    if isinstance(prepared, Prepared) and prepared.names:
                        self._queue_names(key, prepared, row_hash)
                s.unchanged += 1
                return None
        elif isinstance(self.obj, EventsType):
            op = "added"
            if status == "ok":
                s.unchanged += 1
                if st is not None and st.row_hash != row_hash:
                    s.extra["ignored_changes"] += 1
                return None
        else:
            op = "added" if st is None or st.row_hash is None else "changed"
            if status == "ok" and st is not None and st.row_hash == row_hash:
                s.unchanged += 1
                return None
        if status == "rejected" and st is not None and st.attempt_hash == row_hash:
            # Attentive refused exactly this data before: resending cannot help until the data changes.
            s.skipped_rejected += 1
            s.unchanged += 1
            return None
        if status == "in_doubt" and not self.opt.resend_in_doubt:
            s.in_doubt += 1
            s.error(mask_key(key), "in doubt: an earlier run may have sent this; not resent (resend_in_doubt)")
            return None
        return op, row_hash

    def _count_planned(self, op: str, prepared: Prepared) -> bool:
        if prepared.stale:
            self.summary.extra["stale"] += 1
            if getattr(self.obj, "skip_stale", False):
                return False
        self.summary.planned[op] += 1
        return True

    # ------------------------------------------------------------------------------ outcomes ----

    def _record(self, result: Result, item: _Pending) -> None:
        s = self.summary
        op = item.op
        member = None
        confirm = True
        status = result.outcome.value
        message = result.error
        if result.outcome is HttpOutcome.OK:
            s.succeeded[op] += 1
            if isinstance(self.obj, SubscriptionsType):
                member = "unsubscribed" if op == "removed" else "subscribed"
                created = _subscription_types(result.body) if op == "added" else set()
                if created and isinstance(self.obj, SubscriptionsType) and self.obj.subscription_type not in created:
                    # The sign-up unit decides the type of what it creates; unsubscribes and the in-doubt check
                    # name subscription_type, which would then miss these subscriptions entirely.
                    self._stop(
                        SyncConfigStop(
                            f"sign-up unit {self.obj.sign_up_source_id!r} creates {sorted(created)} subscriptions "
                            f"but subscription_type is {self.obj.subscription_type!r}: set subscription_type to "
                            "match, or unsubscribes and in-doubt checks would name the wrong subscription. The "
                            "subscribes already accepted are recorded."
                        )
                    )
                if op == "added" and _previously_created(result.body):
                    s.extra["already_subscribed"] += 1
                    message = "already subscribed (PREVIOUSLY_CREATED)"
                    # Subscribed by someone else (another sync, a sign-up form): this sync did not add them, so
                    # a mirror never unsubscribes them when they leave its model.
                    member = "preexisting"
                if op == "added" and item.prepared and item.prepared.names:
                    self._queue_names(item.pk, item.prepared, item.attempt_hash)
                    confirm = False
        elif result.outcome is HttpOutcome.IN_DOUBT:
            s.in_doubt += 1
            s.error(mask_key(item.pk), f"in doubt: {message}", result.status)
        else:
            s.failed[op] += 1
            if result.status in (401, 403):
                # The key or its permissions, not the row: record the row as failed so that the next run,
                # with a fixed key, sends it; a rejected row would wait for its data to change.
                status = HttpOutcome.FAILED.value
                self._stop(AttentiveAuthError(_auth_message(result)))
            elif result.outcome is HttpOutcome.REJECTED:
                s.rejected += 1
            s.error(mask_key(item.pk), message or status, result.status)
        if result.outcome is HttpOutcome.OK or result.outcome is HttpOutcome.REJECTED:
            self._consecutive_failures = 0  # Attentive answered: it is up
        else:
            self._consecutive_failures += 1
            if self._consecutive_failures >= self.opt.max_consecutive_failures:
                self._stop(
                    AttentiveUnavailable(
                        f"Attentive looks unavailable: the last {self._consecutive_failures} requests all failed "
                        f"after their retries (last: {message or status}). Stopped sending; what was sent is "
                        "recorded and the rest goes out on the next run."
                    )
                )
        self._done += 1
        self._progress()
        self._outcomes.append(
            Outcome(
                pk=item.pk,
                op=op,
                status=status,
                attempt_hash=item.attempt_hash,
                http_status=result.status,
                message=message,
                member=member,
                log_key=mask_key(item.pk),
                confirm=confirm,
            )
        )
        self._flush()

    def _invalid(self, key: str | None, reason: str) -> None:
        s = self.summary
        s.invalid += 1
        shown = mask_key(key) if key is not None else "<NULL>"
        s.error(shown, reason)
        if not self.opt.dry_run:
            self._outcomes.append(
                Outcome(pk=key or "", op="validate", status="invalid", message=reason, log_key=shown, write_state=False)
            )
            self._flush()

    def _flush(self, force: bool = False) -> None:
        if self.opt.dry_run or not self._outcomes:
            return
        if (
            not force
            and len(self._outcomes) < self.opt.batch_size
            and (time.monotonic() - self._last_flush < self.opt.flush_interval_s)
        ):
            return
        outcomes, self._outcomes = self._outcomes, []
        self.state.write_outcomes(self.opt.sync_id, self.opt.run_id, outcomes)
        self._last_flush = time.monotonic()
        self.state.refresh_lock(self.opt.sync_id, self._lock_holder, self.opt.lock_ttl_s)

    # ------------------------------------------------------------------------- recovery & doubt ----

    def _settle_pending(self) -> None:
        """Rows with an intent and no outcome: a previous run died between sending and recording."""
        if not self._state_ready:
            return
        pending = self.state.rows_with_status(self.opt.sync_id, ["pending"])
        if not pending:
            return
        self.log.warning(
            "%d row(s) were being sent when an earlier run of %s stopped; settling them first",
            len(pending),
            self.opt.sync_id,
        )
        if isinstance(self.obj, AttributesType):
            # An upsert is idempotent: sending it again is harmless, so treat it as a transient failure.
            status, message = "failed", "earlier run stopped before recording the outcome; will resend"
        else:
            status, message = "in_doubt", "earlier run stopped before recording the outcome"
        if self.opt.dry_run:
            return
        self.state.write_outcomes(
            self.opt.sync_id,
            self.opt.run_id,
            [Outcome(pk=r.pk, op=r.op or "", status=status, message=message, log_key=mask_key(r.pk)) for r in pending],
        )

    def _resolve_in_doubt(self) -> None:
        """Ask Attentive (``GET /v1/subscriptions``) whether in-doubt subscribes/unsubscribes landed."""
        if self.opt.dry_run or not isinstance(self.obj, SubscriptionsType):
            return
        self._flush(force=True)
        rows = [r for r in self.state.rows_with_status(self.opt.sync_id, ["in_doubt"]) if r.identity]
        if not rows:
            return
        by_key = {r.pk: r for r in rows}
        requests = [Request(key=r.pk, params={"phone": json.loads(r.identity or "{}").get("phone", "")}) for r in rows]
        settled: list[Outcome] = []
        unresolved = 0
        for result in self.sender.send_many("subscriptions_read", requests):
            row = by_key[str(result.key)]
            if not result.ok:
                unresolved += 1
                if result.status == 403:
                    self.log.warning(
                        "cannot resolve in-doubt subscriptions: the API key lacks subscriptions:read; "
                        "they stay in doubt (resend_in_doubt=True sends them again)"
                    )
                continue
            subscribed = _is_subscribed(result.body, self.obj.subscription_type)
            landed = subscribed if row.op == "added" else not subscribed
            if landed:
                member = "subscribed" if row.op == "added" else "unsubscribed"
                settled.append(
                    Outcome(
                        pk=row.pk,
                        op=row.op or "",
                        status="ok",
                        attempt_hash=row.attempt_hash,
                        message="in doubt, confirmed by GET /v1/subscriptions",
                        member=member,
                        log_key=mask_key(row.pk),
                        # Names of a subscriber who landed are written by the next run that reads its row.
                        confirm=not self._writes_names(),
                    )
                )
            else:
                settled.append(
                    Outcome(
                        pk=row.pk,
                        op=row.op or "",
                        status="failed",
                        message="in doubt, had not landed per GET /v1/subscriptions; will resend",
                        log_key=mask_key(row.pk),
                    )
                )
        if settled:
            self.state.write_outcomes(self.opt.sync_id, self.opt.run_id, settled)
            self.log.info(
                "resolved %d in-doubt subscription change(s) with GET /v1/subscriptions; %d still in doubt",
                len(settled),
                unresolved,
            )

    # ---------------------------------------------------------------------------------- mirror ----

    def _members(self) -> set[str]:
        if not self._state_ready:
            return set()
        return set(self.state.iter_members(self.opt.sync_id))

    def _scan_keys(self, members: set[str]) -> set[str]:
        seen: set[str] = set()
        # Only the key column: the guards need nothing else, and a columnar warehouse bills by columns read.
        for _, rows in self.source.stream(self.obj.columns[self.obj.key_index]):
            self.summary.rows_read += len(rows)
            for (value,) in rows:
                key = self.obj.key_from_value(value)
                if key is not None and key in members:
                    seen.add(key)
            self._progress()  # also keeps the lock alive through a long scan
        return seen

    def _removal_limit(self, tracked: int) -> int:
        cap = self.opt.max_removals
        if isinstance(cap, float):
            return math.floor(cap * tracked + 1e-9)
        return int(cap)

    def _check_removal_guards(self, tracked: int, removals: int, rows_read: int) -> None:
        if removals == 0:
            return
        if rows_read == 0 and not self.opt.allow_empty_source:
            self.summary.extra["blocked_removals"] = removals
            raise SyncAborted(
                f"the model returned no rows; mirroring it would unsubscribe all {removals} member(s) this sync "
                "added. Nothing was sent. If the audience really is empty now, set allow_empty_source=True."
            )
        limit = self._removal_limit(tracked)
        if removals > limit:
            self.summary.extra["blocked_removals"] = removals
            raise SyncAborted(
                f"mirror would unsubscribe {removals} of {tracked} tracked member(s), above max_removals="
                f"{self.opt.max_removals!r} (limit {limit}). Nothing was sent. Check the model; run with "
                "dry_run=True to list who would be removed; if the removals are intended, raise max_removals."
            )

    def _mirror_removals(self, members: set[str], seen: set[str]) -> None:
        leaving = sorted(members - seen)
        if not leaving:
            return
        try:
            self._check_removal_guards(len(members), len(leaving), self.summary.rows_read)
        except SyncAborted as exc:
            if not self.opt.dry_run:
                raise
            # Go on listing who would be removed: that list is what the guard's message asks the user to check.
            self.log.warning("a live run would stop here: %s", exc)
        obj = self.obj
        assert isinstance(obj, SubscriptionsType)
        pending: dict[str, _Pending] = {}

        def removals() -> Iterator[Request]:
            for start in range(0, len(leaving), self.opt.batch_size):
                keys = leaving[start : start + self.opt.batch_size]
                rows = self.state.lookup(self.opt.sync_id, keys) if self._state_ready else {}
                batch = []
                for key in keys:
                    st = rows.get(key)
                    if st is None or not st.identity:
                        continue
                    if st.status == "in_doubt" and not self.opt.resend_in_doubt:
                        self.summary.in_doubt += 1
                        continue
                    identity = json.loads(st.identity)
                    if identity.get("pk") in self._unreadable_pks:
                        self.summary.extra["held_removals"] += 1
                        self.summary.error(
                            mask_key(key), "not unsubscribed: its row is still in the model, with an unreadable phone"
                        )
                        continue
                    self.summary.planned["removed"] += 1
                    body = obj.unsubscribe_body(
                        identity, email=str(identity.get("email", "")).lower() not in self._model_emails
                    )
                    self._sample(body, key, "removed")
                    batch.append((_Pending(key, "removed", st.attempt_hash or "", None), Request(key=key, body=body)))
                batch = batch[: self._within_budget(len(batch))]
                if not batch:
                    continue
                if not self.opt.dry_run:
                    self._hold_lock()
                    self.state.write_intents(
                        self.opt.sync_id,
                        self.opt.run_id,
                        [Intent(p.pk, p.op, p.attempt_hash) for p, _ in batch],
                        set(rows),
                    )
                for item, request in batch:
                    pending[item.pk] = item
                    self._sent += 1
                    yield request

        if self.opt.dry_run:
            for _ in removals():
                pass
            return
        for result in self.sender.send_many("unsubscribe", removals()):
            self._record(result, pending.pop(str(result.key)))

    def _skip_already_subscribed(self, part: list[tuple[_Pending, Request]]) -> list[tuple[_Pending, Request]]:
        """Record, without a subscribe, the people of ``part`` that Attentive says are already subscribed."""
        adds = [item for item, _ in part if item.op == "added" and item.prepared and item.prepared.identity]
        if not self._precheck or not adds or not isinstance(self.obj, SubscriptionsType):
            return part
        checks = [Request(key=i.pk, params={"phone": i.prepared.identity["phone"]}) for i in adds if i.prepared]
        already: set[str] = set()
        for result in self.sender.send_many("subscriptions_read", checks):
            if result.status == 403:
                self._precheck = False
                self.log.info("the key lacks subscriptions:read: subscribes are sent without checking first")
            elif result.ok and _is_subscribed(result.body, self.obj.subscription_type):
                already.add(str(result.key))
        if not already:
            return part
        outcomes = []
        for item, _ in part:
            if item.pk not in already:
                continue
            self.summary.succeeded["added"] += 1
            self.summary.extra["already_subscribed"] += 1
            confirm = True
            if item.prepared and item.prepared.names:
                self._queue_names(item.pk, item.prepared, item.attempt_hash)
                confirm = False
            outcomes.append(
                Outcome(
                    pk=item.pk,
                    op="added",
                    status="ok",
                    attempt_hash=item.attempt_hash,
                    message="already subscribed (GET /v1/subscriptions): not subscribed again",
                    member="preexisting",
                    log_key=mask_key(item.pk),
                    confirm=confirm,
                )
            )
        self.state.write_outcomes(self.opt.sync_id, self.opt.run_id, outcomes)
        return [(item, request) for item, request in part if item.pk not in already]

    def _writes_names(self) -> bool:
        return isinstance(self.obj, SubscriptionsType) and self.obj.writes_names

    def _queue_names(self, key: str, prepared: Prepared, row_hash: str) -> None:
        body = {"properties": prepared.names, "user": {"phone": prepared.identity["phone"]}}
        self._followups.append((Request(key=key, body=body), row_hash))

    def _send_followups(self) -> None:
        """First and last names of subscribers, as custom attributes (after a successful subscribe).

        A row counts as complete (its hash confirmed) only once its names are written, so names lost to a stop
        or a crash before this point are written by the next run.
        """
        if not self._followups or self.opt.dry_run:
            self._followups = []
            return
        hashes = {str(request.key): row_hash for request, row_hash in self._followups}
        written: list[tuple[str, str]] = []
        failed = 0
        for result in self.sender.send_many("attributes", [request for request, _ in self._followups]):
            if result.ok:
                written.append((str(result.key), hashes[str(result.key)]))
            else:
                failed += 1
                self.summary.error(mask_key(str(result.key)), f"name attributes not written: {result.error}")
        self.state.confirm_hashes(self.opt.sync_id, written)
        self.summary.extra["names_written"] = len(written)
        if failed:
            self.log.warning("%d subscriber name update(s) failed; retried next run", failed)
        self._followups = []

    # --------------------------------------------------------------------------------- helpers ----

    def _rollback_state(self) -> None:
        try:
            self.state.conn.rollback()
        except Exception:
            self.log.debug("rollback of the state connection failed", exc_info=True)

    def _tables_exist(self) -> bool:
        return self.state.tables_exist()

    def _lookup(self, keys: list[str]) -> dict[str, StateRow]:
        if not self._state_ready or not keys:
            return {}
        return self.state.lookup(self.opt.sync_id, keys)

    def _within_budget(self, wanted: int) -> int:
        """How many of the next ``wanted`` requests this run may still send; the rest count as ``remaining``.

        Called just before a batch's intents are written, when every earlier batch has been handed to the
        transport, so ``_sent`` is exact and a run never sends more than ``max_rows_per_run`` requests.
        """
        if self._halt is not None:
            self.summary.remaining += wanted
            return 0
        allowed = 0 if self._budget_reached() else wanted
        if self.opt.max_rows_per_run is not None:
            allowed = min(allowed, max(0, self.opt.max_rows_per_run - self._sent))
        if allowed < wanted:
            self.summary.remaining += wanted - allowed
            self._stop_sending()
        return allowed

    def _budget_reached(self) -> bool:
        opt = self.opt
        if not self._budget_hit and (
            (opt.max_rows_per_run is not None and self._sent >= opt.max_rows_per_run)
            or (opt.max_runtime_s is not None and time.monotonic() - self._started >= opt.max_runtime_s)
        ):
            self._stop_sending()
        return self._budget_hit

    def _stop(self, error: RunStopped) -> None:
        """No further request of this run can succeed: send no new batch, finish recording, then raise."""
        if self._halt is None:
            self._halt = error
            self.log.error("%s", error)

    def _stop_sending(self) -> None:
        if self._budget_hit:
            return
        self._budget_hit = True
        self.log.warning(
            "budget reached (max_rows_per_run=%s, max_runtime=%ss): stopping sends; the rest is counted as "
            "remaining and goes out next run",
            self.opt.max_rows_per_run,
            self.opt.max_runtime_s,
        )

    def _sample(self, payload: dict[str, Any], key: str, op: str) -> None:
        """In a dry run, keep a few masked payloads and the (masked) keys each operation would touch."""
        if not self.opt.dry_run:
            return
        if len(self.summary.samples) < self.opt.dry_run_samples:
            self.summary.samples.append(mask_payload(payload))
        keys = self.summary.would_send.setdefault(op, [])
        if len(keys) < DRY_RUN_KEYS:
            keys.append(mask_key(key))

    def _hold_lock(self) -> None:
        """Extend our lock, or stop if it expired and another run took it over.

        Called before every batch of intents: a run that stalled longer than ``lock_ttl_s`` before sending
        (a slow primary-key check or pre-scan, a paused process) must not send alongside the run that took over.
        """
        if not self.state.refresh_lock(self.opt.sync_id, self._lock_holder, self.opt.lock_ttl_s):
            raise SyncLockedError(
                f"lost the lock of sync {self.opt.sync_id!r} (it expired and another run took it); stopping"
            )

    def _progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress < self.opt.progress_interval_s:
            return
        self._last_progress = now
        if not self.opt.dry_run:
            self._hold_lock()
        elapsed = now - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        backlog = self._sent - self._done
        eta = f"{backlog / rate:.0f}s" if rate > 0 else "?"
        s = self.summary
        self.log.info(
            "progress: read %d rows, sent %d, done %d (%.1f/s), failed %d, invalid %d, in flight %d, eta %s",
            s.rows_read,
            self._sent,
            self._done,
            rate,
            s.total(s.failed),
            s.invalid,
            backlog,
            eta,
        )

    def _stats_snapshot(self) -> dict[str, int]:
        stats = self.stats
        if stats is None:
            return {"requests": 0, "retries": 0, "throttled": 0}
        snap = stats.snapshot() if hasattr(stats, "snapshot") else {}
        return {
            "requests": int(snap.get("requests_sent", 0)),
            "retries": int(snap.get("retries", 0)),
            "throttled": int(snap.get("throttled", 0)),
        }


def _auth_message(result: Result) -> str:
    detail = f" ({result.error})" if result.error else ""
    if result.status == 401:
        return (
            f"Attentive refused the API key (HTTP 401){detail}: fix the key in the Attentive connection. "
            "Rows refused for this reason are recorded as failed and go out on the next run."
        )
    return (
        f"the API key may not call {result.endpoint} (HTTP 403){detail}: give the custom app the permission this "
        "sync needs in Attentive. Rows refused for this reason are recorded as failed and go out on the next run."
    )


def _identity(prepared: Prepared | None) -> str | None:
    if prepared is None or not prepared.identity:
        return None
    return json.dumps(prepared.identity, sort_keys=True)


def _subscription_types(body: Any) -> set[str]:
    """The subscription types a subscribe answer says were created or found."""
    responses = body.get("subscriptionResponses") if isinstance(body, dict) else None
    if not isinstance(responses, list):
        return set()
    return {
        str(r["subscription"]["type"])
        for r in responses
        if isinstance(r, dict) and isinstance(r.get("subscription"), dict) and r["subscription"].get("type")
    }


def _previously_created(body: Any) -> bool:
    """True when every subscription in a 202 answer already existed."""
    if not isinstance(body, dict):
        return False
    responses = body.get("subscriptionResponses")
    if not isinstance(responses, list) or not responses:
        return False
    return all(isinstance(r, dict) and r.get("subscriptionCreationStatus") == "PREVIOUSLY_CREATED" for r in responses)


def _is_subscribed(body: Any, subscription_type: str) -> bool:
    if not isinstance(body, dict):
        return False
    for item in body.get("subscriptionEligibilities") or []:
        sub = item.get("subscription") or {}
        if sub.get("type") == subscription_type and sub.get("channel") == "TEXT":
            return bool((item.get("eligibility") or {}).get("isEligible"))
    return False
