"""Recording a run's answers: row outcomes and counts, written in batches, and the circuit breaker.

Every answer the delivery yields, every invalid row and every outcome a type decides itself goes through here:
the summary is counted, the row's state and log entries are buffered and written in batches (or at once when
forced), and a run whose last requests all failed after their retries is stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_provider_attentive.client import RequestOutcome, Result
from airflow_provider_attentive.sync.errors import AttentiveAuthError, AttentiveUnavailable
from airflow_provider_attentive.sync.object_type import Answer, Planned
from airflow_provider_attentive.sync.state import RowOutcome
from airflow_provider_attentive.sync.values import mask_key, printable

if TYPE_CHECKING:
    from airflow_provider_attentive.sync.engine import SyncEngine

__all__ = ["Recorder"]


class Recorder:
    """Counts and records the outcomes of one run (created by its ``SyncEngine``)."""

    def __init__(self, run: SyncEngine) -> None:
        self.run = run
        self.done = 0  # answers recorded for requests of this run
        self._outcomes: list[RowOutcome] = []
        self._last_flush = time.monotonic()
        self._consecutive_failures = 0

    def record_earlier(self, item: Planned, result: Result) -> None:
        """An answer for a row an earlier run sent (a finished bulk job): recorded, counted apart."""
        outcome = result.outcome
        status = (
            "ok" if outcome is RequestOutcome.OK else "rejected" if outcome is RequestOutcome.REJECTED else "failed"
        )
        self.run.summary.reconciled[status] += 1
        answer = self.run.obj.read_ok(item, result) if status == "ok" else None
        if answer is not None and answer.stop is not None:
            self.run.stop(answer.stop)
        if status != "ok":
            self.run.summary.error(mask_key(item.key), result.error or status, result.status)
        self._outcomes.append(
            RowOutcome(
                pk=item.key,
                op=item.op,
                status=status,
                attempt_hash=item.attempt_hash,
                http_status=result.status,
                message=answer.message if answer is not None and answer.message else result.error,
                member=answer.member if answer is not None else None,
                log_key=mask_key(item.key),
                confirm=answer.confirm if answer is not None else True,
                identity=_identity(answer),
            )
        )
        self.flush()

    def record(self, item: Planned, result: Result) -> None:
        s = self.run.summary
        op = item.op
        member = None
        confirm = True
        answer: Answer | None = None
        status = result.outcome.value
        message = result.error
        if result.outcome is RequestOutcome.OK:
            s.succeeded[op] += 1
            answer = self.run.obj.read_ok(item, result)
            if answer.stop is not None:
                self.run.stop(answer.stop)
            member = answer.member
            confirm = answer.confirm
            if answer.message is not None:
                message = answer.message
        elif result.outcome is RequestOutcome.IN_DOUBT:
            s.in_doubt += 1
            s.error(mask_key(item.key), f"in doubt: {message}", result.status)
        else:
            s.failed[op] += 1
            if result.status in (401, 403):
                # The key or its permissions, not the row: record the row as failed so that the next run,
                # with a fixed key, sends it; a rejected row would wait for its data to change.
                status = RequestOutcome.FAILED.value
                self.run.stop(AttentiveAuthError(_auth_message(result)))
            elif result.outcome is RequestOutcome.REJECTED:
                s.rejected += 1
            s.error(mask_key(item.key), message or status, result.status)
        if result.outcome is RequestOutcome.OK or result.outcome is RequestOutcome.REJECTED:
            self._consecutive_failures = 0  # Attentive answered: it is up
        elif result.attempts or result.throttled:
            # Only requests count: rows told "failed" by a job's results, or the other rows of one failed bulk
            # request, say nothing more about whether Attentive is up.
            self._consecutive_failures += 1
            if self._consecutive_failures >= self.run.options.max_consecutive_failures:
                self.run.stop(
                    AttentiveUnavailable(
                        f"Attentive looks unavailable: the last {self._consecutive_failures} requests all failed "
                        f"after their retries (last: {message or status}). Stopped sending; what was sent is "
                        "recorded and the rest goes out on the next run."
                    )
                )
        self.done += 1
        self.run.progress()
        self._outcomes.append(
            RowOutcome(
                pk=item.key,
                op=op,
                status=status,
                attempt_hash=item.attempt_hash,
                http_status=result.status,
                message=message,
                member=member,
                log_key=mask_key(item.key),
                confirm=confirm,
                identity=_identity(answer),
            )
        )
        self.flush()

    def invalid(self, key: str | None, reason: str, *, shown: str | None = None) -> None:
        s = self.run.summary
        # A key with a NUL or a lone surrogate must still be writable to the log table (PostgreSQL refuses both).
        shown = printable(shown or (mask_key(key) if key is not None else "<NULL>"))
        reason = printable(reason)
        s.invalid_row(shown, reason)
        if not self.run.options.dry_run:
            self._outcomes.append(
                RowOutcome(
                    pk=key or "", op="validate", status="invalid", message=reason, log_key=shown, write_state=False
                )
            )
            self.flush()

    def flush(self, force: bool = False) -> None:
        if self.run.options.dry_run or not self._outcomes:
            return
        # A bulk delivery's rows arrive a job at a time (up to 10,000), and a job is closed only after its rows'
        # outcomes are written: buffering a job's worth loses nothing in a crash (the job is read again), while
        # writing every 100 rows spent most of a large reconcile in commits.
        size = max(self.run.options.batch_size, self.run.send_batch_size)
        if (
            not force
            and len(self._outcomes) < size
            and (time.monotonic() - self._last_flush < self.run.options.flush_interval_s)
        ):
            return
        outcomes, self._outcomes = self._outcomes, []
        self.run.state.write_outcomes(self.run.options.sync_id, self.run.options.run_id, outcomes)
        self._last_flush = time.monotonic()
        self.run.refresh_lock()

    def write_outcomes(self, outcomes: Sequence[RowOutcome]) -> None:
        if outcomes:
            self.run.state.write_outcomes(self.run.options.sync_id, self.run.options.run_id, outcomes)


def _identity(answer: Answer | None) -> str | None:
    if answer is None or answer.identity is None:
        return None
    return json.dumps(answer.identity, sort_keys=True)


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
