"""Waiting for v2 bulk jobs from an asyncio loop: the poller behind the deferrable trigger.

A bulk job takes minutes to hours, so the waiting runs in Airflow's triggerer rather than a worker slot.
The triggerer is one asyncio process running many triggers, so the poller is plain async (no loop thread
of its own) and its requests are paced by the process-wide window of the ``bulk_job`` endpoint, which
every poller on the same key shares.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from airflow_provider_attentive.client.config import TransportConfig
from airflow_provider_attentive.client.endpoints import EndpointName, get_endpoint
from airflow_provider_attentive.client.jobs import JobStatus
from airflow_provider_attentive.client.ratelimit.base import RateLimiter, trace_extension
from airflow_provider_attentive.client.ratelimit.local import DEFAULT_REGISTRY, LimiterRegistry
from airflow_provider_attentive.client.redact import install_httpx_filter
from airflow_provider_attentive.client.retry import parse_retry_after
from airflow_provider_attentive.client.scrub import scrub

__all__ = ["JobPollError", "PollOutcome", "poll_jobs"]

log = logging.getLogger(__name__)

install_httpx_filter()

# Job status requests in flight at once: enough to poll hundreds of jobs within the rate limit, few enough
# not to crowd the triggerer's event loop.
_CONCURRENCY = 8


class JobPollError(Exception):
    """Polling cannot go on: Attentive refused the key (401) or its permissions (403).

    ``jobs`` holds each job's last known status; the message never contains the API key.
    """

    def __init__(self, message: str, *, status: int | None, jobs: Mapping[str, JobStatus]) -> None:
        super().__init__(message)
        self.status = status
        self.jobs = dict(jobs)


@dataclass(frozen=True)
class PollOutcome:
    """Each job's last :class:`JobStatus`, in the order asked; ``finished`` when every job is."""

    jobs: Mapping[str, JobStatus]

    @property
    def finished(self) -> bool:
        """True when every job reported ``COMPLETED`` or ``FAILED``."""
        return all(status.finished for status in self.jobs.values())


def _job_ids(job_ids: Iterable[str]) -> list[str]:
    if isinstance(job_ids, str):
        raise TypeError("job_ids must be a list of job ids, not one string")
    ids: list[str] = []
    for job_id in job_ids:
        if not isinstance(job_id, str) or not job_id.strip():
            raise ValueError(f"every bulk job id must be a non-empty string, got {job_id!r}")
        if job_id not in ids:
            ids.append(job_id)
    if not ids:
        raise ValueError("poll_jobs needs at least one bulk job id")
    return ids


def _bulk_job_rate(config: TransportConfig) -> float:
    # The local backend's share is the user's "1/N of the key" instruction; with a shared backend the share
    # only applies while it is down, and the triggerer does not use that backend at all.
    if config.rate_limit_backend == "local":
        return config.local_rates()[EndpointName.BULK_JOB]
    return config.rate_for(EndpointName.BULK_JOB)


async def poll_jobs(
    config: TransportConfig,
    job_ids: Iterable[str],
    *,
    interval_s: float = 60.0,
    deadline: float,
    registry: LimiterRegistry | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> PollOutcome:
    """Ask for each job's status every ``interval_s`` until all are finished or ``deadline`` passes.

    ``deadline`` is wall-clock time (``time.time()``), so a trigger restarted by the triggerer keeps its
    original end. There is always one round of requests, even past the deadline, so the outcome holds fresh
    statuses. Network errors, 429 and 5xx answers are retried at the next interval (the job keeps its last
    readable status); a 401 or 403 raises :class:`JobPollError`. Requests carry the connection's bearer key
    and user agent to ``config.base_url`` (already held to https, or http to a loopback emulator) and keep to
    the ``bulk_job`` rate through ``registry`` (the process-wide one by default).
    """
    ids = _job_ids(job_ids)
    if not interval_s > 0:
        raise ValueError(f"interval_s must be positive, got {interval_s!r}")
    path_of = {job_id: get_endpoint(EndpointName.BULK_JOB).resolve_path({"bulkJobId": job_id}) for job_id in ids}
    limiter = (registry or DEFAULT_REGISTRY).limiter_for(
        config.base_url, config.api_key, {EndpointName.BULK_JOB: _bulk_job_rate(config)}
    )
    last = {job_id: JobStatus.unknown(job_id, "not polled yet") for job_id in ids}
    gate = asyncio.Semaphore(min(_CONCURRENCY, config.max_concurrency))
    async with httpx.AsyncClient(
        base_url=config.base_url,
        headers=config.request_headers(),
        timeout=httpx.Timeout(config.timeout),
        follow_redirects=False,
        # As the transport: only the connection's own proxy, never one (or .netrc) from the environment.
        trust_env=False,
        proxy=config.proxy,
        transport=transport,
    ) as client:
        poller = _Poller(config, client, limiter, gate)
        while True:
            pending = [job_id for job_id in ids if not last[job_id].finished]
            answers = await asyncio.gather(
                *(poller.status(job_id, path_of[job_id]) for job_id in pending), return_exceptions=True
            )
            denied: JobPollError | None = None
            for job_id, answer in zip(pending, answers, strict=True):
                if isinstance(answer, JobPollError):
                    denied = denied or answer
                elif isinstance(answer, BaseException):
                    raise answer
                elif answer.reason is None or last[job_id].status is None:
                    # A failed poll keeps the last readable status: "IN_PROGRESS" says more than "ReadTimeout".
                    last[job_id] = answer
            if denied is not None:
                raise JobPollError(str(denied), status=denied.status, jobs=last)
            outcome = PollOutcome(dict(last))
            remaining = deadline - clock()
            if outcome.finished or remaining <= 0:
                return outcome
            await sleep(min(interval_s, remaining))


class _Poller:
    """One job status request, paced by the limiter; errors other than 401/403 become a reason."""

    def __init__(
        self, config: TransportConfig, client: httpx.AsyncClient, limiter: RateLimiter, gate: asyncio.Semaphore
    ) -> None:
        self._secrets = config.secret_values()
        self._client = client
        self._limiter = limiter
        self._gate = gate

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    async def status(self, job_id: str, path: str) -> JobStatus:
        endpoint = EndpointName.BULK_JOB
        async with self._gate:
            permit = await self._limiter.acquire(endpoint)
            try:
                response = await self._client.get(path, extensions=trace_extension(permit))
            except httpx.TransportError as exc:
                log.info("GET %s: %s; trying again at the next interval", path, type(exc).__name__)
                return JobStatus.unknown(job_id, self._scrub(f"GET {path}: {type(exc).__name__}: {exc}"))
        status = response.status_code
        remaining = _header_int(response.headers.get("x-ratelimit-remaining"))
        if remaining is not None:
            self._limiter.note_remaining(endpoint, remaining, _header_int(response.headers.get("x-ratelimit-limit")))
        if status in (401, 403):
            meaning = "rejected the API key" if status == 401 else "refused access (the key may lack bulk API access)"
            raise JobPollError(f"GET {path}: Attentive {meaning} (HTTP {status})", status=status, jobs={})
        if status == 429:
            self._limiter.note_throttled(endpoint, parse_retry_after(response.headers.get("retry-after")))
            return JobStatus.unknown(job_id, f"GET {path}: rate limited (HTTP 429)")
        if not 200 <= status < 300:
            return JobStatus.unknown(job_id, f"GET {path} answered HTTP {status}")
        try:
            body = json.loads(response.content)
        except ValueError:
            return JobStatus.unknown(job_id, f"GET {path}: the answer is not JSON")
        return JobStatus.from_answer(job_id, body)


def _header_int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None
