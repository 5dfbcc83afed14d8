"""The sync engine: one loop for every object type, with no Airflow imports.

One run, in order:

1. take the per-sync lock in the state store (two runs of one sync never send at once);
2. settle rows a previous run left *pending* (intent written, no outcome: the process died mid-request), and
   take in the answers a delivery received since (bulk jobs);
3. check the model's primary key in the warehouse (NULL or duplicate keys fail before anything is sent);
4. the object type's phase before the rows (subscriptions: in-doubt resolution, a mirror's removal guards);
5. stream the model in chunks: key and hash each row, look its key up in the state table, let the object type
   classify it, prepare the rows that are new, changed or failed last time, and hand them to the delivery in
   batches. Before each batch goes out the engine writes the batch's *intents*; outcomes are written in batches
   as answers arrive (write-ahead, so a crash leaves at most one batch plus what was in flight in doubt);
6. the object type's phase after the rows (mirror removals, follow-ups); then the summary.

Everything that differs between object types sits behind the hooks of
:class:`~airflow_provider_attentive.sync.object_type.ObjectType`, and how requests reach Attentive behind
:class:`~airflow_provider_attentive.sync.delivery.Delivery`; the engine knows neither the concrete types nor
the endpoints. It talks to databases through DB-API connections, so it is tested without Airflow.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from airflow_provider_attentive.client import Result
from airflow_provider_attentive.sync.budget import SendBudget
from airflow_provider_attentive.sync.delivery import Delivery, PerRowDelivery, Sender
from airflow_provider_attentive.sync.errors import (
    RunStopped,
    SyncConfigError,
    SyncLockedError,
    TooManyFailures,
)
from airflow_provider_attentive.sync.object_type import Batch, Invalid, ObjectType, Planned, Prepared
from airflow_provider_attentive.sync.options import SyncOptions
from airflow_provider_attentive.sync.recorder import Recorder
from airflow_provider_attentive.sync.source import SqlSource, database_error, is_database_error
from airflow_provider_attentive.sync.state import KNOWN_STATUSES, Intent, RowOutcome, StateRow, StateStore
from airflow_provider_attentive.sync.summary import Summary, render_table
from airflow_provider_attentive.sync.values import mask_key

__all__ = ["SyncEngine", "SyncOptions"]

KEY_MAX = 500  # the state table's pk column is VARCHAR(500)


class SyncEngine:
    """Runs one sync of one object type. Create one per run.

    :param obj: the object type (attributes, events, subscriptions, ...), configured with its mapping.
    :param options: run options.
    :param source: the model.
    :param state: the state store (its connection may be the source's).
    :param sender: the Attentive transport.
    :param delivery: how planned requests are sent; default one request per row through ``sender``.
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
        delivery: Delivery | None = None,
        log: logging.Logger | None = None,
        stats: Any = None,
    ) -> None:
        if not obj.modes:
            raise SyncConfigError(f"{type(obj).__name__} declares no modes")
        if not options.mode:
            options.mode = obj.modes[0]
        if options.mode not in obj.modes:
            raise SyncConfigError(f"mode {options.mode!r} is not valid for {obj.object_type}; use one of {obj.modes}")
        self.obj = obj
        self.options = options
        self.source = source
        self.state = state
        self.sender = sender
        self.delivery = delivery or PerRowDelivery(sender)
        self.log = log or logging.getLogger("airflow_provider_attentive.sync")
        self.stats = stats if stats is not None else getattr(sender, "stats", None)
        self.summary = Summary(
            sync_id=options.sync_id,
            object_type=obj.object_type,
            mode=options.mode,
            dry_run=options.dry_run,
            run_id=options.run_id,
        )
        self.summary.count_ops(obj.extra_ops)
        self._state_ready = False
        self.budget = SendBudget(options, self.summary, self.log)
        self._started = self.budget.started
        self._last_progress = self._started
        self._halt: RunStopped | None = None  # set when no further request can succeed; checked per batch
        self._lock_holder = f"{options.run_id}:{uuid.uuid4().hex[:8]}"
        self._stats_start = self._stats_snapshot()
        self.recorder = Recorder(self)
        obj.bind(self)
        self.delivery.bind(self)
        self.summary.extra.update(obj.summary_counters())
        self.summary.extra.update(self.delivery.summary_counters())

    # ------------------------------------------------------------------------------- for the types ----

    @property
    def state_ready(self) -> bool:
        return self._state_ready

    @property
    def halted(self) -> bool:
        return self._halt is not None

    @property
    def send_batch_size(self) -> int:
        return self.delivery.batch_size or self.options.batch_size

    # ------------------------------------------------------------------------------------------ run ----

    def run(self) -> dict[str, Any]:
        """Run the sync and return the summary dict; raise when a guard or the failure ratio says so."""
        opt = self.options
        locked = False
        try:
            if not opt.dry_run:
                self.state.ensure_tables()
                self._state_ready = True
                self.state.acquire_lock(opt.sync_id, self._lock_holder, ttl_s=opt.lock_ttl_s, wait_s=opt.lock_wait_s)
                locked = True
            else:
                self._state_ready = self.state.tables_exist()
                if self._state_ready:
                    self.state.check_columns()
            columns = self.source.columns()
            self.obj.configure(columns)
            if opt.check_primary_key:
                self.source.check_primary_key(self.obj.columns[self.obj.pk_index])
            self._settle_pending()
            self._record_all(self.delivery.reconcile(), earlier=True)
            self.obj.before_rows()
            self.dispatch(self.obj.stream_endpoint(), self._stream())
            if self._halt is None:
                self.obj.after_rows()
            self._record_all(self.delivery.wait())
            self.flush(force=True)
            if not opt.dry_run and opt.log_retention_days:
                self.state.prune_log(
                    opt.sync_id, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=opt.log_retention_days)
                )
        except BaseException as exc:
            # A failed statement (e.g. the warehouse erroring mid-stream on a shared PostgreSQL connection)
            # aborts the transaction; roll back so the outcomes below are still recorded.
            self._rollback_state()
            if is_database_error(exc):
                # A driver's message can quote a row's value (a phone in a failed cast), whichever statement
                # surfaced it: told by position instead, and the original kept out of the traceback.
                chunk = self.source.chunk_size
                read = self.summary.rows_read
                raise database_error(exc, f"rows {max(1, read - chunk + 1)}-{read + chunk} of the model") from None
            raise
        finally:
            try:
                self.flush(force=True)
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
        if not self.options.dry_run and (
            invalid_ratio > self.options.max_failed_ratio or failed_ratio > self.options.max_failed_ratio
        ):
            raise TooManyFailures(
                f"{s.invalid} of {s.rows_read} rows invalid ({invalid_ratio:.1%}) and {s.total(s.failed)} of "
                f"{attempted} sends failed ({failed_ratio:.1%}); max_failed_ratio is {self.options.max_failed_ratio:.1%}. "
                "Every outcome was recorded; see the summary's errors and the sync log table.",
                result,
            )
        return result

    # --------------------------------------------------------------------------------- the stream ----

    def _stream(self) -> Iterator[Batch]:
        """Classify the model chunk by chunk and yield the batches of rows to send."""
        obj = self.obj
        first_chunk = True
        shared = obj.shared_key_counter
        handled: set[str] = set()  # keys decided this run (a set of people: audiences, not event logs)
        carry: list[Planned] = []  # planned rows not yet in a full batch (deliveries with their own batch size)
        carry_existing: set[str] = set()
        carried: set[str] = set()  # their keys: a later chunk's row with one of them is a repeat
        for _, rows in self.source.stream():
            self.summary.rows_read += len(rows)
            if first_chunk and (cards := obj.card_columns(rows)):
                raise SyncConfigError(
                    "columns that look like payment card numbers, which Attentive's terms prohibit: "
                    + ", ".join(cards)
                    + "; nothing was sent. If they are not card numbers, allow them with allow_sensitive_columns=[...]."
                )
            keyed: list[tuple[str, Sequence[Any]]] = []
            for row in rows:
                try:
                    key = obj.key_of(row)
                except Exception as exc:  # a value no text can be made of (Decimal('sNaN'), a 5,000-digit int)
                    self._invalid(None, f"the key cannot be read as text ({type(exc).__name__})", shown="<unreadable>")
                    continue
                if key is None:
                    self._invalid(*obj.key_problem(row))
                    obj.observe_unkeyed(row)
                    continue
                problem = _key_problem(key)
                if problem:
                    self._invalid(key, problem, shown=mask_key(key[:40] + "...") if len(key) > KEY_MAX else None)
                    continue
                keyed.append((key, row))
                obj.observe(key, row)
            known = self._lookup([k for k, _ in keyed])
            planned: list[Planned] = []
            batched: set[str] = set()
            sensitive: list[str] = []
            for key, row in keyed:
                st = known.get(key)
                if shared:
                    # A person is decided once per run, by the first of their rows: a second row with the same
                    # key in a later chunk must not be classified again (its first request may have ended in
                    # doubt or been skipped as rejected), and a dry run must count it the same way.
                    if key in handled:
                        self.summary.extra[shared] += 1
                        continue
                    handled.add(key)
                if (
                    key in batched
                    or key in carried
                    or (st is not None and st.status == "pending" and st.run_id == self.options.run_id)
                ):
                    # Distinct warehouse values can share one key text (1 and '1' in a SQLite column), which the
                    # warehouse check cannot see: a second intent in this chunk would fail the run, and a second
                    # request while the first is in flight (its intent is this run's) races with it.
                    if shared:
                        self.summary.extra[shared] += 1  # two rows, one person: sent once
                    else:
                        self._invalid(key, "primary key appears twice in the model")
                    continue
                try:
                    decision = self._classify(key, row, st)
                    if decision is None:
                        continue
                    op, attempt_hash = decision
                    prepared = obj.prepare(row, key)
                except Exception as exc:
                    # One row's content never stops the run: whatever a value does to hashing or validation,
                    # the row is reported (masked) and the others go on.
                    self._invalid(key, f"the row cannot be read ({type(exc).__name__})")
                    continue
                if isinstance(prepared, Invalid) and prepared.empty:
                    self.summary.extra["nothing_to_send"] = self.summary.extra.get("nothing_to_send", 0) + 1
                    continue
                if isinstance(prepared, Invalid):
                    if prepared.sensitive:
                        sensitive.append(f"{mask_key(key)}: {prepared.reason}")
                    self._invalid(key, prepared.reason)
                    continue
                if prepared.note:
                    self.log.warning("row %s: %s", mask_key(key), prepared.note)
                    self.summary.warn(mask_key(key), prepared.note)
                if not obj.admit(op, prepared):
                    continue
                self.summary.planned[op] += 1
                batched.add(key)
                body = obj.body(op, prepared)
                planned.append(Planned(key, op, attempt_hash, prepared, body))
                self.sample(body, key, op)
            if first_chunk and sensitive:
                raise SyncConfigError(
                    "the first rows hold values that look like sensitive data Attentive's terms prohibit; nothing "
                    "was sent. Examples: " + "; ".join(sensitive[:3]) + ". If these columns are not sensitive, "
                    "allow them with allow_sensitive_columns=[...]."
                )
            first_chunk = False
            existing = set(known)
            if self.delivery.batch_size:
                # A delivery that sends a batch as one request wants full batches: rows left over from this chunk
                # wait for the next one (1,000-row chunks would otherwise make 256+256+256+232).
                carry.extend(planned)
                carried.update(item.key for item in planned)
                carry_existing |= existing & {item.key for item in planned}
                size = self.delivery.batch_size
                while len(carry) >= size:
                    batch, carry = carry[:size], carry[size:]
                    keys = {item.key for item in batch}
                    carried -= keys
                    yield Batch(batch, carry_existing & keys)
            else:
                for start in range(0, len(planned), self.options.batch_size):
                    yield Batch(planned[start : start + self.options.batch_size], existing)
            self.progress()
        if carry:
            yield Batch(carry, carry_existing & {item.key for item in carry})

    def _classify(self, key: str, row: Sequence[Any], st: StateRow | None) -> tuple[str, str] | None:
        """Return ``(operation, hash)`` when the row must be sent, else count why not and return None."""
        s = self.summary
        row_hash = self.obj.row_hash(row)
        status = st.status if st else None
        if st is not None and (problem := self._unrecognised(st)):
            # Written by hand, by another version, or damaged: taking it for "not sent" could send again what
            # Attentive already has (a repeat subscribe texts the person), so nothing is sent until it is fixed.
            s.held_unknown_state += 1
            s.error(
                mask_key(key),
                f"held, nothing sent: {problem}; fix or delete this key's row in {self.state.state_table}",
            )
            return None
        if status == "submitted":
            # Its previous delivery has not answered yet: a newer value sent now could be overtaken by it.
            s.awaiting_job += 1
            return None
        if status == "pending":  # only seen in a dry run: a live run settles pending rows first
            status = self.obj.pending_status
        op = self.obj.classify(key, row, st, status, row_hash)
        if op is None:
            s.unchanged += 1
            return None
        if status == "rejected" and st is not None and st.attempt_hash == row_hash:
            # Attentive refused exactly this data before: resending cannot help until the data changes.
            s.skipped_rejected += 1
            s.unchanged += 1
            return None
        if status == "in_doubt" and not self.options.resend_in_doubt:
            s.in_doubt += 1
            s.error(mask_key(key), "in doubt: an earlier run may have sent this; not resent (resend_in_doubt)")
            return None
        return op, row_hash

    # ------------------------------------------------------------------------------- dispatching ----

    def dispatch(self, endpoint: str, batches: Iterable[Batch]) -> None:
        """Send planned batches to ``endpoint`` within the run's budget, recording every answer.

        The budget is checked as the delivery pulls each batch, not when the batch is planned: a chunk is
        classified all at once, long before its last batch goes out.
        """
        opt = self.options

        def admitted() -> Iterator[list[Planned]]:
            for batch in batches:
                items = batch.items[: self.budget.admit(len(batch.items), halted=self._halt is not None)]
                if not items:
                    continue
                if not opt.dry_run:
                    self._hold_lock()
                    self.state.write_intents(
                        opt.sync_id,
                        opt.run_id,
                        [Intent(p.key, p.op, p.attempt_hash, _identity(p.prepared)) for p in items],
                        batch.existing,
                    )
                    items = self.obj.before_send(items)
                self.budget.sent += len(items)
                yield items

        if opt.dry_run:
            for _ in admitted():
                pass
            return
        self._record_all(self.delivery.deliver(endpoint, admitted()))

    def _record_all(self, answers: Iterable[tuple[Planned, Result]], *, earlier: bool = False) -> None:
        record = self.recorder.record_earlier if earlier else self.recorder.record
        for item, result in answers:
            record(item, result)

    def _unrecognised(self, st: StateRow) -> str | None:
        """Why the engine does not recognise a state row, or None."""
        if st.status not in KNOWN_STATUSES:
            return f"its state row has status {str(st.status)[:40]!r}, which this version never writes"
        return self.obj.unrecognised_state(st)

    def _invalid(self, key: str | None, reason: str, *, shown: str | None = None) -> None:
        self.recorder.invalid(key, reason, shown=shown)

    def flush(self, force: bool = False) -> None:
        self.recorder.flush(force)

    def write_outcomes(self, outcomes: Sequence[RowOutcome]) -> None:
        self.recorder.write_outcomes(outcomes)

    def refresh_lock(self) -> None:
        """Extend the run's lock (done whenever outcomes are written)."""
        self.state.refresh_lock(self.options.sync_id, self._lock_holder, self.options.lock_ttl_s)

    # ------------------------------------------------------------------------------------- recovery ----

    def _settle_pending(self) -> None:
        """Rows with an intent and no outcome: a previous run died between sending and recording."""
        if not self._state_ready:
            return
        pending = self.state.rows_with_status(self.options.sync_id, ["pending"])
        if not pending:
            return
        self.log.warning(
            "%d row(s) were being sent when an earlier run of %s stopped; settling them first",
            len(pending),
            self.options.sync_id,
        )
        status = self.obj.pending_status
        message = "earlier run stopped before recording the outcome"
        if status == "failed":
            message += "; will resend"
        if self.options.dry_run:
            return
        self.write_outcomes(
            [
                RowOutcome(pk=r.pk, op=r.op or "", status=status, message=message, log_key=mask_key(r.pk))
                for r in pending
            ]
        )

    # --------------------------------------------------------------------------------- helpers ----

    def _rollback_state(self) -> None:
        try:
            self.state.conn.rollback()
        except Exception:
            self.log.debug("rollback of the state connection failed", exc_info=True)

    def _lookup(self, keys: list[str]) -> dict[str, StateRow]:
        if not self._state_ready or not keys:
            return {}
        return self.state.lookup(self.options.sync_id, keys)

    def stop(self, error: RunStopped) -> None:
        """No further request of this run can succeed: send no new batch, finish recording, then raise."""
        if self._halt is None:
            self._halt = error
            self.log.error("%s", error)

    def sample(self, payload: dict[str, Any], key: str, op: str) -> None:
        """In a dry run, keep a few masked payloads and the (masked) keys each operation would touch."""
        if self.options.dry_run:
            self.summary.sample(payload, key, op, self.options.dry_run_samples)

    def _hold_lock(self) -> None:
        """Extend our lock, or stop if it expired and another run took it over.

        Called before every batch of intents: a run that stalled longer than ``lock_ttl_s`` before sending
        (a slow primary-key check or pre-scan, a paused process) must not send alongside the run that took over.
        """
        if not self.state.refresh_lock(self.options.sync_id, self._lock_holder, self.options.lock_ttl_s):
            raise SyncLockedError(
                f"lost the lock of sync {self.options.sync_id!r} (it expired and another run took it); stopping"
            )

    def progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress < self.options.progress_interval_s:
            return
        self._last_progress = now
        if not self.options.dry_run:
            self._hold_lock()
        elapsed = now - self._started
        rate = self.recorder.done / elapsed if elapsed > 0 else 0.0
        backlog = self.budget.sent - self.recorder.done
        eta = f"{backlog / rate:.0f}s" if rate > 0 else "?"
        s = self.summary
        self.log.info(
            "progress: read %d rows, sent %d, done %d (%.1f/s), failed %d, invalid %d, in flight %d, eta %s%s",
            s.rows_read,
            self.budget.sent,
            self.recorder.done,
            rate,
            s.total(s.failed),
            s.invalid,
            backlog,
            eta,
            self.delivery.progress_note(),
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


def _identity(prepared: Prepared | None) -> str | None:
    if prepared is None or not prepared.identity:
        return None
    return json.dumps(prepared.identity, sort_keys=True)


def _key_problem(key: str) -> str | None:
    """Why a key cannot be stored in the state table (every supported database takes what passes)."""
    if len(key) > KEY_MAX:
        return f"primary key is longer than {KEY_MAX} characters"
    if "\x00" in key:
        return "primary key contains a NUL character, which databases refuse in text"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "primary key is not valid Unicode (it holds a lone surrogate)"
    return None
