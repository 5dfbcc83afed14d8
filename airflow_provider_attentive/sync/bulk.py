"""Attentive's v2 bulk jobs as a delivery: many rows per request, each row's outcome from a results file.

:class:`BulkJobDelivery` is the :class:`~airflow_provider_attentive.sync.delivery.Delivery` every bulk-job
endpoint shares (submit, record, wait, reconcile); a subclass says how rows become one request and how a results
line names its row. ``BulkAttributesDelivery`` is the one for custom attributes, and
``sync.objects.segments.SegmentMembersDelivery`` the one for segment members. For attributes
(``sync.objects.attributes.BulkAttributesDelivery``):

* ``deliver`` groups each batch of planned rows into one ``POST /v2/bulk/user/attributes`` (many in flight,
  within the ``bulk`` rate limit). A 202 records the job against its rows (``submitted``) before anything
  waits on it; a whole-request 400 is split in halves until the offending users are alone and rejected; in
  ``"auto"`` mode a 403/404 (no ``subscriptions:write``, or the beta not enabled) sends the run through v1.
* ``reconcile`` reads ``GET /v2/bulk/job/{id}`` for the sync's open jobs; for a ``COMPLETED`` job it downloads
  the results file (without the API key: the link is pre-signed) and yields each row's answer: 2xx accepted,
  4xx rejected with Attentive's message, anything else, a missing line or an unreadable one failed (resent:
  upserts are idempotent). A ``FAILED`` job, or one older than the results' two-week retention, fails its rows.
* ``wait`` polls the jobs this run submitted for up to ``wait_s`` and yields their answers as they finish.

Attentive documents neither the results' line format nor how a line names its item; the reading here follows
``docs/bulk-jobs.md``: a line is matched to a row by the identifiers it echoes, and what cannot be matched is
never counted as done. A row may carry several items (a segment removal names a person's current and former
identifiers): it is done only when every one of its lines says so.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from airflow_provider_attentive.client import EndpointName, Request, RequestOutcome, Result
from airflow_provider_attentive.client.jobs import JobStatus
from airflow_provider_attentive.client.results import ResultsDownloadError, download_results
from airflow_provider_attentive.sync.delivery import BaseDelivery, Sender
from airflow_provider_attentive.sync.job_store import JobRecord, JobStore
from airflow_provider_attentive.sync.object_type import Planned, Prepared, Run
from airflow_provider_attentive.sync.state import StateRow

__all__ = ["RESULTS_RETENTION_S", "BulkJobDelivery", "combined", "identity_key", "job_result", "read_line"]

RESULTS_RETENTION_S = 14 * 24 * 3600  # Attentive keeps a job's results file for two weeks
_MAX_JOB_ID = 100
IdentityKey = tuple[str, str, str]


def identity_key(identifiers: Any) -> IdentityKey | None:
    """What a results line and a row are matched on: the identifiers as submitted."""
    if not isinstance(identifiers, dict):
        return None
    phone, email, client_user_id = (str(identifiers.get(k) or "") for k in ("phone", "email", "clientUserId"))
    return (phone, email, client_user_id) if phone or email or client_user_id else None


class BulkJobDelivery(BaseDelivery):
    """Planned rows as v2 bulk jobs: submitted, recorded against their rows, waited for, reconciled.

    A subclass sets :attr:`kind` and implements :meth:`bulk_endpoint`, :meth:`request_body`, :meth:`items_of`,
    :meth:`line_item` and :meth:`line_result`; it may override :meth:`refused` (a whole request answered 403/404).

    :param sender: the transport.
    :param batch_size: rows per bulk request.
    :param wait_s: how long :meth:`wait` polls this run's jobs (0: leave them to the next run).
    :param poll_interval_s: the first pause between polls; it doubles up to 30 s.
    :param allow_insecure_http: let the results link be plain http to a non-loopback host (never for real).
    :param proxy: the connection's own proxy for the results download (the environment's is never used).
    """

    #: what the log calls these jobs ("bulk", "segment member")
    kind = "bulk"
    #: bulk requests in flight at once. A job is recorded when its answer is taken, and a request pulled holds its
    #: rows (up to 10,000) in memory with their intents written: the transport's default window (about a second of
    #: the endpoint's rate) would pull a whole million-member model before recording its first job. Eight keep
    #: the 100/s limit busy at 80 ms of latency.
    window = 8

    def __init__(
        self,
        sender: Sender,
        *,
        batch_size: int,
        wait_s: float = 600.0,
        poll_interval_s: float = 1.0,
        allow_insecure_http: bool = False,
        proxy: str | None = None,
    ) -> None:
        self.sender = sender
        # The engine batches intents by this: one bulk request each.
        self.batch_size: int | None = batch_size
        self.wait_s = max(0.0, float(wait_s))
        self.poll_interval_s = max(0.05, float(poll_interval_s))
        self.allow_insecure_http = allow_insecure_http
        self.proxy = proxy
        self.submitted_jobs: list[str] = []

    # ------------------------------------------------------------------------------ for subclasses ----

    def bulk_endpoint(self, endpoint: str) -> EndpointName:
        """The bulk endpoint that carries rows the engine dispatches to ``endpoint``."""
        raise NotImplementedError

    def request_body(self, endpoint: EndpointName, items: Sequence[Planned]) -> dict[str, Any]:
        """One bulk request's body for ``items``."""
        raise NotImplementedError

    def items_of(self, op: str, identity: dict[str, Any]) -> list[dict[str, Any]]:
        """The identifiers of each item a row submitted (one per results line), from its op and stored identity."""
        raise NotImplementedError

    def stored_identity(self, item: Planned) -> dict[str, Any]:
        """What the state keeps as the row's identity while its job runs (what :meth:`items_of` reads)."""
        raise NotImplementedError

    def line_item(self, request: Any) -> Any:
        """The identifiers a results line echoes for its item (``request`` is the line's ``request``)."""
        raise NotImplementedError

    def line_result(self, key: str, response: dict[str, Any], endpoint: str) -> Result:
        """One results line's answer for the row ``key`` (``endpoint``: the job's bulk endpoint)."""
        raise NotImplementedError

    def split(self, batch: Sequence[Planned]) -> list[list[Planned]]:
        """The requests one batch makes (one, unless its rows carry more items than a request takes)."""
        return [list(batch)]

    def refused(self, result: Result, items: list[Planned]) -> bool:
        """A whole request answered 403 or 404: True when the subclass takes ``items`` and the rest of the run over
        (a fallback; the batches pulled after it go to :meth:`hand_over`)."""
        return False

    def hand_over(self, items: list[Planned]) -> None:
        """A batch pulled after :meth:`refused` took the run over."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ run ----

    def bind(self, run: Run) -> None:
        self.run = run
        self.jobs = JobStore(run.state)
        self.submitted_jobs = []

    def summary_counters(self) -> dict[str, Any]:
        return {
            "bulk_jobs_submitted": 0,
            "bulk_jobs_pending": 0,
            "bulk_jobs_completed": 0,
            "awaiting_results": 0,
        }

    def progress_note(self) -> str:
        extra = self.run.summary.extra
        if not extra.get("bulk_jobs_submitted") and not extra.get("bulk_jobs_completed"):
            return ""
        return f", {self.kind} jobs submitted {extra['bulk_jobs_submitted']}, finished {extra['bulk_jobs_completed']}"

    def deliver(self, endpoint: str, batches: Iterable[Sequence[Planned]]) -> Iterator[tuple[Planned, Result]]:
        return self._bulk(endpoint, iter(batches))

    def _bulk(self, endpoint: str, batches: Iterator[Sequence[Planned]]) -> Iterator[tuple[Planned, Result]]:
        if not self.run.options.dry_run:
            self.jobs.ensure_table()
        bulk = self.bulk_endpoint(endpoint)
        in_flight: dict[int, list[Planned]] = {}
        refused: list[list[Planned]] = []  # whole requests refused with a 400: split and sent again
        counter = itertools.count()
        taken_over = False  # a subclass took the run over (attributes: through v1); the rest goes its way

        def requests(source: Iterable[Sequence[Planned]]) -> Iterator[Request]:
            for batch in source:
                if taken_over:
                    self.hand_over(list(batch))  # pulled (its intents written): it goes the subclass's way too
                    continue
                for items in self.split(batch):
                    key = next(counter)
                    in_flight[key] = items
                    yield Request(key=key, body=self.request_body(bulk, items))

        pending: Iterable[Sequence[Planned]] = batches
        while True:
            for result in self.sender.send_many(bulk, requests(pending), window=self.window):
                items = in_flight.pop(int(result.key))
                if result.ok:
                    yield from self._submitted(bulk, items, result)
                elif result.status == 400 and len(items) > 1:
                    refused.append(items)
                elif result.status in (403, 404) and self.refused(result, items):
                    taken_over = True
                else:
                    # One request failed, not one per row: only the first row carries its attempts.
                    quiet = dataclasses.replace(result, attempts=0, throttled=0)
                    yield from ((item, result if i == 0 else quiet) for i, item in enumerate(items))
            if not refused:
                break
            # A whole-request 400 names no item: halves, recursively, until the offending rows are alone.
            pending = [half for items in refused for half in (items[: len(items) // 2], items[len(items) // 2 :])]
            refused = []
        yield from self.after_bulk(endpoint, batches)

    def after_bulk(self, endpoint: str, rest: Iterator[Sequence[Planned]]) -> Iterator[tuple[Planned, Result]]:
        """After the bulk requests: answers for rows a subclass took over (and the batches not pulled yet)."""
        return iter(())

    def _submitted(self, bulk: EndpointName, items: list[Planned], result: Result) -> Iterator[tuple[Planned, Result]]:
        body = result.body if isinstance(result.body, dict) else {}
        job_id = body.get("batchJobId") or body.get("bulkJobId")
        if not isinstance(job_id, str) or not job_id.strip() or len(job_id) > _MAX_JOB_ID:
            # Accepted, but with nothing to follow the job by: never counted as done; resent next run.
            failed = job_result(result.key, RequestOutcome.FAILED, result.status, "bulk job accepted without a job id")
            yield from ((item, failed) for item in items)
            return
        rows = [(item.key, json.dumps(self.stored_identity(item), sort_keys=True)) for item in items]
        self.jobs.record(self.run.options.sync_id, job_id, bulk.value, rows)
        self.submitted_jobs.append(job_id)
        summary = self.run.summary.extra
        summary["bulk_jobs_submitted"] += 1
        summary["awaiting_results"] += len(items)

    # ------------------------------------------------------------------------------------ reconcile ----

    def reconcile(self) -> Iterator[tuple[Planned, Result]]:
        if self.run.options.dry_run or not self.jobs.exists():
            return iter(())
        return self._reconcile(self.jobs.open_jobs(self.run.options.sync_id))

    def wait(self) -> Iterator[tuple[Planned, Result]]:
        """Poll this run's jobs for up to ``wait_s``, yielding their rows' answers as the jobs finish."""
        if not self.submitted_jobs or self.wait_s <= 0:
            self._count_pending()
            return
        deadline = time.monotonic() + self.wait_s
        pause = self.poll_interval_s
        mine = set(self.submitted_jobs)

        def still_open() -> list[JobRecord]:
            return [j for j in self.jobs.open_jobs(self.run.options.sync_id) if j.job_id in mine]

        open_jobs = still_open()
        while open_jobs:
            yield from self._reconcile(open_jobs)
            open_jobs = still_open()  # one read per round: it decides both whether to go on and what to poll
            remaining = deadline - time.monotonic()
            if not open_jobs or remaining <= 0 or self.run.halted:
                break
            time.sleep(min(pause, remaining))
            self.run.progress()  # also keeps the lock alive while waiting
            pause = min(pause * 2, 30.0)
        self._count_pending()

    def _count_pending(self) -> None:
        if self.run.options.dry_run or not self.jobs.exists():
            return
        self.run.summary.extra["bulk_jobs_pending"] = len(self.jobs.open_jobs(self.run.options.sync_id))

    def pending_job_ids(self) -> list[str]:
        """Open jobs of this sync (for a trigger to wait on)."""
        if not self.jobs.exists():
            return []
        return [job.job_id for job in self.jobs.open_jobs(self.run.options.sync_id)]

    def _reconcile(self, open_jobs: Sequence[JobRecord]) -> Iterator[tuple[Planned, Result]]:
        if not open_jobs:
            return
        sync_id = self.run.options.sync_id
        checks = [Request(key=job.job_id, path_params={"bulkJobId": job.job_id}) for job in open_jobs]
        records = {job.job_id: job for job in open_jobs}
        statuses: dict[str, JobStatus] = {}
        for result in self.sender.send_many(EndpointName.BULK_JOB, checks):
            job_id = str(result.key)
            if result.ok:
                statuses[job_id] = JobStatus.from_answer(job_id, result.body)
            else:
                statuses[job_id] = JobStatus.unknown(job_id, f"HTTP {result.status}: {result.error}")
        for job_id, status in statuses.items():
            record = records[job_id]
            if status.completed and status.url:
                yield from self._mine(job_id, self._read_results(record, status.url))
            elif status.finished:  # FAILED: nothing was applied that can be told apart; resent
                yield from self._mine(job_id, self._fail_rows(record, "FAILED", f"bulk job {job_id} failed; resent"))
            elif record.age().total_seconds() > RESULTS_RETENTION_S:
                message = f"bulk job {job_id} unfinished after two weeks; its rows are resent"
                yield from self._mine(job_id, self._fail_rows(record, "EXPIRED", message))
            else:
                self.jobs.update(sync_id, job_id, status.status or "UNKNOWN", status.reason)

    def _mine(self, job_id: str, answers: Iterator[tuple[Planned, Result]]) -> Iterator[tuple[Planned, Result]]:
        """Answers for a job's rows; those of this run's jobs no longer await their results."""
        mine = job_id in self.submitted_jobs
        for answer in answers:
            if mine:
                self.run.summary.extra["awaiting_results"] -= 1
            yield answer

    def _fail_rows(self, record: JobRecord, closed: str, message: str) -> Iterator[tuple[Planned, Result]]:
        sync_id = self.run.options.sync_id
        for row in self.jobs.rows(sync_id, record.job_id):
            yield _planned(row), job_result(row.pk, RequestOutcome.FAILED, None, message)
        self._close(record.job_id, closed, message)

    def _close(self, job_id: str, closed: str, message: str | None) -> None:
        """Close a job once the outcomes of its rows, all yielded by now, are written.

        The engine buffers outcomes; a job closed first and the run killed before the buffer was written would
        leave its rows ``submitted`` under a closed job: never reconciled again, and never resent.
        """
        self.run.flush(force=True)
        self.jobs.update(self.run.options.sync_id, job_id, closed, message)

    def _read_results(self, record: JobRecord, url: str) -> Iterator[tuple[Planned, Result]]:
        sync_id = self.run.options.sync_id
        rows = self.jobs.rows(sync_id, record.job_id)
        if not rows:  # its outcomes were written, and the run stopped before it closed the job
            self._close(record.job_id, "COMPLETED", None)
            return
        # Every item a row submitted waits for its own line; a row is answered once all of its lines are read.
        by_identity: dict[IdentityKey, collections.deque[StateRow]] = collections.defaultdict(collections.deque)
        expected: dict[str, int] = {}
        unmatchable: list[StateRow] = []
        for row in rows:
            identity = _json(row.identity)
            keys = [identity_key(item) for item in self.items_of(row.op or "", identity)] if identity else []
            if not keys or None in keys:
                unmatchable.append(row)
                continue
            expected[row.pk] = len(keys)
            for key in keys:
                by_identity[key].append(row)  # type: ignore[index]
        lines: dict[str, list[Result]] = collections.defaultdict(list)
        unreadable = 0
        try:
            for line in download_results(url, allow_insecure_http=self.allow_insecure_http, proxy=self.proxy):
                item = _json(line)
                request = item.get("request") if isinstance(item, dict) else None
                response = item.get("response") if isinstance(item, dict) else None
                key = identity_key(self.line_item(request))
                queue = by_identity.get(key) if key else None
                if not queue or not isinstance(response, dict):
                    unreadable += 1
                    continue
                row = queue.popleft()
                lines[row.pk].append(self.line_result(row.pk, response, record.endpoint))
        except ResultsDownloadError as exc:
            if not exc.final:
                # The link may work on the next try: the job stays open and its rows keep waiting.
                self.jobs.update(sync_id, record.job_id, "COMPLETED_UNREAD", str(exc))
                return
            # An expired link: none of the lines read so far is trusted alone.
            message = f"results of bulk job {record.job_id} could not be read ({exc}); resent next run"
            yield from self._fail_rows(record, "EXPIRED", message)
            return
        missing = 0
        for row in rows:
            answers = lines.get(row.pk, [])
            if row.pk not in expected or len(answers) < expected[row.pk]:
                missing += 1
                yield (
                    _planned(row),
                    job_result(row.pk, RequestOutcome.FAILED, None, "no line in the bulk job's results"),
                )
            else:
                yield _planned(row), combined(row.pk, answers)
        if unreadable or missing:
            self.run.log.warning(
                "%s job %s: %d result line(s) unreadable or unmatched, %d row(s) without every line (resent next run)",
                self.kind,
                record.job_id,
                unreadable,
                missing,
            )
        self.run.summary.extra["bulk_jobs_completed"] += 1
        self._close(record.job_id, "COMPLETED", None)


def combined(key: str, answers: Sequence[Result]) -> Result:
    """One row's answer from the lines of its items: failed if any failed, else rejected if any was, else ok."""
    if len(answers) == 1:
        return answers[0]
    for outcome in (RequestOutcome.FAILED, RequestOutcome.REJECTED):
        for answer in answers:
            if answer.outcome is outcome:
                return answer
    return answers[0]


def _json(text: str | None) -> Any:
    try:
        return json.loads(text or "")
    except ValueError:
        return None


def _planned(row: StateRow) -> Planned:
    """A row waiting for its job, as the engine records it: its identity as stored, for the type to read."""
    identity = _json(row.identity)
    prepared = Prepared(payload={}, identity=identity) if isinstance(identity, dict) else None
    return Planned(row.pk, row.op or "added", row.attempt_hash or "", prepared, {})


def read_line(key: str, response: dict[str, Any]) -> Result:
    """One results line's answer: 2xx ok; any other 4xx but 401/403/408/429 rejected with its message; else failed."""
    status = response.get("status")
    message = response.get("message")
    text = str(message)[:500] if message is not None else None
    if isinstance(status, int) and not isinstance(status, bool) and 200 <= status < 300:
        return job_result(key, RequestOutcome.OK, status, None)
    if status in (401, 403):
        # About the job's item, not this run's key (which just read the job): the row is resent, the run goes on.
        return job_result(key, RequestOutcome.FAILED, None, f"the results say HTTP {status}: {text or 'no message'}")
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 500 and status not in (408, 429):
        return job_result(key, RequestOutcome.REJECTED, status, text or f"HTTP {status}")
    return job_result(
        key, RequestOutcome.FAILED, status if isinstance(status, int) else None, text or "no usable status"
    )


def job_result(key: Any, outcome: RequestOutcome, status: int | None, error: str | None) -> Result:
    """An answer read from a job (its results, or its status), not from a request of its own."""
    return Result(
        key=key,
        endpoint=EndpointName.BULK,
        outcome=outcome,
        status=status,
        body=None,
        error=error,
        attempts=0,  # an answer read from a job's results, not a request of its own
        throttled=0,
        elapsed_s=0.0,
    )
