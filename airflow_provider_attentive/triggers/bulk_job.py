"""A deferrable wait for Attentive's v2 bulk jobs: :class:`AttentiveBulkJobTrigger`.

A bulk job of custom attributes or segment members takes minutes to hours at Attentive, so a task that
submitted some defers to this trigger: the triggerer polls ``GET /v2/bulk/job/{id}`` for every job and wakes
the task once all are finished or the deadline passes.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_attentive.client.job_poller import JobPollError, PollOutcome, poll_jobs
from airflow_provider_attentive.client.jobs import COMPLETED, FAILED, JobStatus
from airflow_provider_attentive.client.scrub import scrub
from airflow_provider_attentive.hooks.attentive import AttentiveHook

__all__ = ["AttentiveBulkJobTrigger"]

_CLASSPATH = "airflow_provider_attentive.triggers.bulk_job.AttentiveBulkJobTrigger"


class AttentiveBulkJobTrigger(BaseTrigger):
    """Waits until every bulk job in ``job_ids`` is finished, or until ``deadline`` (epoch seconds).

    Polls each unfinished job every ``poll_interval`` seconds through the connection ``attentive_conn_id``,
    then fires one event::

        {"status": "done" | "timeout" | "error",
         "jobs": {job_id: {"id", "status", "finished", "total_records", "results_available", "reason"}},
         "message": "..."}

    "done": every job finished (``COMPLETED`` or ``FAILED``: look at each); "timeout": the deadline passed first;
    "error": the connection is unusable or Attentive refused the key (401/403). The event holds no secret:
    not the API key, and not the results links either, which are pre-signed; the resumed task asks for the
    job again to get its link.
    """

    def __init__(
        self,
        *,
        attentive_conn_id: str = AttentiveHook.default_conn_name,
        job_ids: Sequence[str],
        deadline: float,
        poll_interval: float = 60.0,
    ) -> None:
        super().__init__()
        if isinstance(job_ids, str) or not job_ids:
            raise ValueError("job_ids must be a non-empty list of bulk job ids")
        if not all(isinstance(job_id, str) and job_id.strip() for job_id in job_ids):
            raise ValueError(f"every bulk job id must be a non-empty string, got {list(job_ids)!r}")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or not poll_interval > 0:
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not math.isfinite(deadline):
            raise ValueError(f"deadline must be a time in epoch seconds, got {deadline!r}")
        self.attentive_conn_id = attentive_conn_id
        self.job_ids = list(dict.fromkeys(job_ids))
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the keyword arguments that rebuild this trigger in the triggerer."""
        return (
            _CLASSPATH,
            {
                "attentive_conn_id": self.attentive_conn_id,
                "job_ids": list(self.job_ids),
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until every job is finished or the deadline passes, then fire the one event."""
        hook = AttentiveHook(self.attentive_conn_id)
        secrets: list[str] = []
        try:
            config = await hook.aget_config()
            secrets = config.secret_values()
            self.log.info(
                "Waiting for %d Attentive bulk job(s) until %s",
                len(self.job_ids),
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.deadline)),
            )
            outcome = await poll_jobs(config, self.job_ids, interval_s=self.poll_interval, deadline=self.deadline)
        except JobPollError as exc:
            yield self._event("error", exc.jobs, str(exc), secrets)
            return
        except Exception as exc:
            # Any other failure (a misconfigured connection, an unexpected answer) still wakes the task,
            # which can then fail with the reason, instead of the trigger failing with a bare traceback.
            yield self._event("error", {}, f"{type(exc).__name__}: {exc}", secrets)
            return
        yield self._event("done" if outcome.finished else "timeout", outcome.jobs, _summary(outcome), secrets)

    def _event(self, status: str, jobs: Mapping[str, JobStatus], message: str, secrets: list[str]) -> TriggerEvent:
        message = scrub(message, secrets)
        known = {job_id: jobs.get(job_id) or JobStatus.unknown(job_id, "not polled") for job_id in self.job_ids}
        return TriggerEvent(
            {"status": status, "jobs": {job_id: s.to_event() for job_id, s in known.items()}, "message": message}
        )


def _summary(outcome: PollOutcome) -> str:
    statuses = list(outcome.jobs.values())
    completed = sum(1 for s in statuses if s.finished and s.status == COMPLETED)
    failed = sum(1 for s in statuses if s.finished and s.status == FAILED)
    waiting = len(statuses) - completed - failed
    text = f"{len(statuses)} bulk job(s): {completed} completed, {failed} failed"
    if waiting:
        text += f", {waiting} not finished by the deadline"
    return text
