"""Bulk jobs of the emulated v2 API: their lifecycle, when their items are applied, and their results files.

Attentive answers a bulk request with a job id and applies the items later. Here a job is
``PENDING`` for ``pending_s``, ``IN_PROGRESS`` until ``delay_s`` after submission, then
``COMPLETED`` (each item applied, in order, and one results line written per item) or ``FAILED``
(nothing applied, no results). Jobs advance when the server sees any request, so a test that
waits and then inspects the state finds the items applied.

The results file is served from a pre-signed link, as object storage would serve it: the
signature (an HMAC of the job id and the expiry, secret per server) is the credential, and no
``Authorization`` header is needed; every download is recorded with whether one came anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypedDict
from urllib.parse import parse_qs

from .errors import ApiError
from .keys import key_fingerprint, mask_api_key
from .validation import check_known_settings, check_non_negative, check_shares

__all__ = [
    "JOB_STATUSES",
    "RESULTS_PATH",
    "ApplyItem",
    "BulkJob",
    "JobInfo",
    "JobSettings",
    "JobStore",
    "ResultsHit",
]

JOB_STATUSES: tuple[str, ...] = ("PENDING", "IN_PROGRESS", "COMPLETED", "FAILED")
#: Where results files live, below the emulator's control prefix: ``<RESULTS_PATH><job id>.jsonl``.
RESULTS_PATH = "/_emulator/results/"
_FINISHED = frozenset({"COMPLETED", "FAILED"})

#: Applies one submitted item when its job completes; returns its HTTP-like status and a message. An
#: :class:`~.errors.ApiError` it raises is that item's outcome, not the job's.
ApplyItem = Callable[[Any], tuple[int, str]]


@dataclass
class JobSettings:
    """How emulated bulk jobs behave; rates are shares of jobs (``fail_rate``) or of results lines.

    ``hold`` keeps every unfinished job ``IN_PROGRESS`` until it is released (or ``hold`` is switched
    off). ``results_host`` overrides the host name of results links (by default the API's host
    with ``127.0.0.1`` and ``localhost`` swapped, so a client that sends its key to any host it is
    given is caught).
    """

    delay_s: float = 0.2
    pending_s: float = 0.05
    hold: bool = False
    fail_rate: float = 0.0
    drop_line_rate: float = 0.0
    garble_line_rate: float = 0.0
    results_ttl_s: float = 14 * 24 * 3600.0
    results_host: str | None = None
    seed: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> JobSettings:
        """Build and validate settings (unspecified ones take their defaults); raises ``ValueError``."""
        check_known_settings(data, (f.name for f in fields(cls)), "job")
        cfg = cls(**data)
        check_non_negative(cfg, ("delay_s", "pending_s", "results_ttl_s"))
        check_shares(cfg, ("fail_rate",), "fail_rate")
        check_shares(cfg, ("drop_line_rate", "garble_line_rate"), "drop_line_rate and garble_line_rate")
        if not isinstance(cfg.hold, bool):
            raise ValueError("hold must be true or false")
        if cfg.results_host is not None and (not isinstance(cfg.results_host, str) or not cfg.results_host):
            raise ValueError("results_host must be a non-empty host[:port] string")
        if cfg.seed is not None and (isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int)):
            raise ValueError("seed must be an integer")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class JobInfo(TypedDict):
    """One job as the inspection route lists it (the key masked)."""

    id: str
    kind: str
    status: str
    records: int
    key: str
    held: bool
    submitted_at: float
    completed_at: float | None
    results_lines: int
    users_with_subscriptions: int


class ResultsHit(TypedDict):
    """One request for a results file: which job, the answer, and whether an Authorization header came."""

    job_id: str
    at: float
    status: int
    authorization: bool
    host: str


@dataclass
class BulkJob:
    """A submitted bulk request: its items wait in ``items`` until the job completes."""

    id: str
    kind: str
    owner: str
    key: str
    items: list[Any]
    apply: ApplyItem
    submitted_at: float
    submitted_wall: float
    users_with_subscriptions: int = 0
    status: str = "PENDING"
    released: bool = False
    completed_wall: float | None = None
    results: bytes | None = None
    results_lines: int = 0


class JobStore:
    """Every bulk job of one emulator, the job settings, and the results-file downloads."""

    def __init__(self, settings: JobSettings | None = None) -> None:
        self._initial = settings or JobSettings()
        self._secret = secrets.token_bytes(32)
        #: ``host:port`` of results links when a request carried no Host header (set by the server).
        self.api_host = "127.0.0.1"
        self.reset()

    def reset(self) -> None:
        """Forget every job and download; restore the settings the store was created with."""
        self.jobs: dict[str, BulkJob] = {}
        self._open: list[BulkJob] = []
        self.downloads: list[ResultsHit] = []
        self.configure(self._initial)

    def configure(self, settings: JobSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.seed)

    # -- lifecycle ------------------------------------------------------------------------------

    def submit(
        self,
        kind: str,
        key: str,
        items: Iterable[Any],
        apply: ApplyItem,
        now: float,
        users_with_subscriptions: int = 0,
    ) -> BulkJob:
        """Queue a job of ``items`` for ``key``'s owner; ``apply`` runs on each item when it completes."""
        job = BulkJob(
            id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            kind=kind,
            owner=key_fingerprint(key),
            key=mask_api_key(key),
            items=list(items),
            apply=apply,
            submitted_at=now,
            submitted_wall=time.time(),
            users_with_subscriptions=users_with_subscriptions,
        )
        self.jobs[job.id] = job
        self._open.append(job)
        self.advance(now)
        return job

    def advance(self, now: float) -> None:
        """Move every unfinished job along to where ``now`` puts it (cheap when none is open)."""
        if not self._open:
            return
        settings = self.settings
        still_open = []
        for job in self._open:
            age = now - job.submitted_at
            if age >= settings.delay_s and (job.released or not settings.hold):
                self._finish(job)
                continue
            if age >= min(settings.pending_s, settings.delay_s):
                job.status = "IN_PROGRESS"
            still_open.append(job)
        self._open = still_open

    def _finish(self, job: BulkJob) -> None:
        settings = self.settings
        job.completed_wall = time.time()
        if settings.fail_rate and self._rng.random() < settings.fail_rate:
            job.status = "FAILED"
            return
        lines = []
        drop, garble = settings.drop_line_rate, settings.drop_line_rate + settings.garble_line_rate
        for item in job.items:
            try:
                outcome = job.apply(item)
            except ApiError as exc:
                outcome = exc.status, exc.message
            line = json.dumps({"request": item, "response": {"status": outcome[0], "message": outcome[1]}})
            # One draw per line whatever the rates, so a seed replays the same file.
            r = self._rng.random()
            if r < drop:
                continue
            if r < garble:
                # Half of a JSON object is never JSON: a reader must treat the line as unreadable.
                line = line[: len(line) // 2]
            lines.append(line)
        job.results = "".join(f"{line}\n" for line in lines).encode()
        job.results_lines = len(lines)
        job.status = "COMPLETED"

    def release(self, ids: Iterable[str] | None, now: float) -> list[str]:
        """Let held jobs complete (all unfinished ones when ``ids`` is None); returns the ids released."""
        if ids is None:
            chosen = list(self._open)
        else:
            chosen = []
            for job_id in ids:
                job = self.jobs.get(job_id)
                if job is None:
                    raise ValueError(f"unknown bulk job {job_id!r}")
                if job.status not in _FINISHED:
                    chosen.append(job)
        for job in chosen:
            job.released = True
        self.advance(now)
        return [job.id for job in chosen]

    # -- the API's view -------------------------------------------------------------------------

    def status(self, job_id: str, key: str, host: str) -> dict[str, Any]:
        """``BulkJobStatusResponse`` of the caller's own job; another key's job is as unknown as a bogus id."""
        job = self.jobs.get(job_id)
        if job is None or not hmac.compare_digest(job.owner, key_fingerprint(key)):
            raise ApiError(404, f"bulk job {job_id!r} not found")
        out: dict[str, Any] = {"bulkJobId": job.id, "status": job.status, "totalRecords": len(job.items)}
        if job.status == "COMPLETED":
            out["url"] = self.results_url(job, host)
        return out

    def results_url(self, job: BulkJob, host: str) -> str:
        """The pre-signed link of a completed job's results, on another host name than the API's."""
        assert job.completed_wall is not None
        expires = int(job.completed_wall + self.settings.results_ttl_s)
        return (
            f"http://{self._results_host(host)}{RESULTS_PATH}{job.id}.jsonl"
            f"?expires={expires}&sig={self._sign(job.id, expires)}"
        )

    def _results_host(self, api_host: str) -> str:
        if self.settings.results_host:
            return self.settings.results_host
        api_host = api_host or self.api_host
        if api_host.startswith("["):
            name, _, port = api_host.partition("]")
            name, port = f"{name}]", port.removeprefix(":")
        else:
            name, _, port = api_host.partition(":")
        swapped = {"127.0.0.1": "localhost", "localhost": "127.0.0.1", "[::1]": "localhost"}.get(name.lower(), name)
        return f"{swapped}:{port}" if port else swapped

    def _sign(self, job_id: str, expires: int) -> str:
        return hmac.new(self._secret, f"{job_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def download(self, path: str, query: str, authorization: bool, host: str) -> bytes:
        """The results file at ``path`` if the link's signature holds; records the attempt either way."""
        job_id = path.removeprefix(RESULTS_PATH).removesuffix(".jsonl")
        hit = ResultsHit(job_id=job_id, at=time.time(), status=200, authorization=authorization, host=host)
        self.downloads.append(hit)
        try:
            return self._file(path, job_id, parse_qs(query))
        except ApiError as exc:
            hit["status"] = exc.status
            raise

    def _file(self, path: str, job_id: str, params: Mapping[str, list[str]]) -> bytes:
        sig = params.get("sig", [""])[0]
        try:
            expires = int(params.get("expires", [""])[0])
        except ValueError:
            raise ApiError(403, "results link is not signed (expires and sig are required)") from None
        if not sig or not hmac.compare_digest(sig, self._sign(job_id, expires)):
            raise ApiError(403, "results link signature does not match")
        if expires < time.time():
            raise ApiError(403, "results link has expired")
        job = self.jobs.get(job_id)
        if not path.endswith(".jsonl") or job is None or job.results is None:
            raise ApiError(404, "no such results file")
        return job.results

    # -- inspection -----------------------------------------------------------------------------

    def infos(self) -> list[JobInfo]:
        """Every job in submission order, for the inspection route."""
        hold = self.settings.hold
        return [
            JobInfo(
                id=job.id,
                kind=job.kind,
                status=job.status,
                records=len(job.items),
                key=job.key,
                held=hold and not job.released and job.status not in _FINISHED,
                submitted_at=job.submitted_wall,
                completed_at=job.completed_wall,
                results_lines=job.results_lines,
                users_with_subscriptions=job.users_with_subscriptions,
            )
            for job in self.jobs.values()
        ]
