"""Rate budgets shared by several processes: the common base of the Redis and SQL limiters, and its fallback.

Attentive's limits are per API key and endpoint, so when several tasks in several processes (Celery
workers, parallel backfill intervals) use one key, an in-process limiter per task is not enough: together
they would send N times the limit. The shared limiters keep the budget in a store every such deployment
already has: Redis (:mod:`~airflow_provider_attentive.client.ratelimit.redis`) or a SQL table
(:mod:`~airflow_provider_attentive.client.ratelimit.sql`). Stores are keyed by a fingerprint of the base URL
and API key, never the key itself.

Backend outages. If the backend cannot be reached when the limiter is created,
:class:`RateLimitBackendUnavailable` names the problem (the task fails and Airflow retries it; nothing is
sent). If it goes away while requests are flowing, the limiter falls back to an in-process window at
``rate * share`` per endpoint, where ``share`` is the connection's ``rate_limit_share`` or else
``1 / N`` with N the number of limiters seen on the key in the last ten minutes; it first holds for one
window so its local sends never share a window with sends booked in the backend. It probes the backend
every second and, once it answers, books there again while also keeping to the local share for a few
seconds, until every process has had time to switch back. So an outage slows the sync down but never
sends above the limit (provided no new process starts meanwhile, which the start check refuses).

Attentive's 429 and ``x-ratelimit-remaining`` stay the last line of defence: the transport retries a 429
after a wait and feeds both back here.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from airflow_provider_attentive.client.ratelimit.base import MAX_MARGIN_S, Permit, window_shape
from airflow_provider_attentive.client.ratelimit.local import SlidingWindowLimiter
from airflow_provider_attentive.client.scrub import redact_url

__all__ = [
    "PEER_HORIZON_S",
    "EndpointShape",
    "RateLimitBackendUnavailable",
    "SharedRateLimiter",
    "budget_fingerprint",
    "redact_url",
]

log = logging.getLogger(__name__)

# A limiter counts as a peer (for the outage fallback's 1/N) if it booked within this horizon.
PEER_HORIZON_S = 600.0
# While degraded, the backend is probed at most this often.
PROBE_INTERVAL_S = 1.0
# After the backend comes back, keep to the local share this long as well (see the module docstring).
RECOVERY_GRACE_S = 3.0


class RateLimitBackendUnavailable(ConnectionError):
    """The shared rate-limit backend could not be reached when the limiter was created."""


def budget_fingerprint(base_url: str, api_key: str) -> str:
    """A one-way identifier for one budget (base URL and API key): what the shared stores are keyed by."""
    return hashlib.sha256(f"{base_url}\0{api_key}".encode()).hexdigest()[:16]


class EndpointShape:
    """An endpoint's window: ``capacity`` starts per ``window_s`` (+ margin), starts ``spacing_s`` apart."""

    __slots__ = ("capacity", "rate", "slot_s", "spacing_s", "window_s")

    def __init__(self, rate: float, smoothing: float) -> None:
        self.rate = rate
        self.capacity, self.window_s = window_shape(rate)
        self.slot_s = self.window_s / self.capacity
        self.spacing_s = smoothing * self.slot_s


class _Permits:
    """Several permits for one request (local share plus shared booking during recovery)."""

    __slots__ = ("_permits",)

    def __init__(self, *permits: Permit | None) -> None:
        self._permits = [p for p in permits if p is not None]

    async def before_send(self) -> None:
        for permit in self._permits:
            check = getattr(permit, "before_send", None)
            if check is not None:
                await check()

    def sent(self) -> None:
        for permit in self._permits:
            permit.sent()


class SharedRateLimiter:
    """A rate limiter whose budget lives in a store that several processes share.

    Holds the local fallback common to the shared backends (see the module docstring); subclasses
    (:class:`~airflow_provider_attentive.client.ratelimit.redis.RedisRateLimiter`,
    :class:`~airflow_provider_attentive.client.ratelimit.sql.SqlRateLimiter`) provide the calls to the store.
    """

    backend = "shared"
    #: Exceptions that mean "the backend is unreachable" (set by subclasses).
    _outage_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        rates: Mapping[str, float],
        share: float | None,
        margin_s: float,
        smoothing: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if share is not None and not 0 < share <= 1:
            raise ValueError(f"rate_limit_share must be in (0, 1], got {share!r}")
        if margin_s < 0 or smoothing < 0:
            raise ValueError("margin_s and smoothing must not be negative")
        self._fingerprint = budget_fingerprint(base_url, api_key)
        self._shapes = {name: EndpointShape(float(rate), smoothing) for name, rate in rates.items()}
        self._share = share
        self._margin_s = margin_s
        self._smoothing = smoothing
        self._clock = clock
        self._lock = threading.Lock()
        self._client_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._seq = itertools.count(1)
        self._peers = 1
        self._degraded = False
        self._degraded_count = 0
        self._next_probe = 0.0
        self._hold_until = -math.inf
        self._grace_until = -math.inf
        self._fallback: dict[str, SlidingWindowLimiter] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warned_limits: dict[str, int] = {}

    # -- what the transport calls ---------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """The budget's fingerprint (base URL + API key), as stored in the backend."""
        return self._fingerprint

    @property
    def degraded(self) -> bool:
        """True while the backend is unreachable and the local fallback share is in use."""
        return self._degraded

    @property
    def outages(self) -> int:
        """How many times this limiter fell back to its local share."""
        return self._degraded_count

    @property
    def peers(self) -> int:
        """Limiters seen on this budget recently (the N of the fallback share), as of the last booking."""
        return self._peers

    def fallback_share(self) -> float:
        """The fraction of each limit used while the backend is unreachable."""
        return self._share if self._share is not None else 1.0 / max(1, self._peers)

    async def acquire(self, endpoint_name: str) -> Permit | None:
        """Wait until one request to ``endpoint_name`` may start (see the module docstring)."""
        if endpoint_name not in self._shapes:
            raise KeyError(f"no rate limit configured for endpoint {endpoint_name!r}")
        if self._degraded and not await self._maybe_recover():
            permit = await self._local_acquire(endpoint_name)
            if self._degraded:
                return permit
            # The backend came back while we waited: book there as well.
            return await self._shared_or_local(endpoint_name, permit)
        if self._clock() < self._grace_until:
            permit = await self._local_acquire(endpoint_name)
            return await self._shared_or_local(endpoint_name, permit)
        return await self._shared_or_local(endpoint_name, None)

    def note_remaining(self, endpoint_name: str, remaining: int, limit: int | None) -> None:
        """``x-ratelimit-remaining`` from Attentive: at 0, hold every process back by one slot."""
        window = self._fallback.get(endpoint_name)
        if window is not None:
            window.note_remaining(remaining, limit)
        shape = self._shapes.get(endpoint_name)
        if shape is None:
            return
        if limit is not None and limit < shape.capacity and self._warned_limits.get(endpoint_name) != limit:
            self._warned_limits[endpoint_name] = limit
            log.warning(
                "Attentive reports a limit of %s requests/s for %s but %s/s is configured; "
                "lower the connection's rate limit to avoid 429 answers.",
                limit,
                endpoint_name,
                shape.rate,
            )
        if remaining <= 0 and not self._degraded:
            self._spawn(self._shared_hold(endpoint_name, shape.slot_s))

    def note_throttled(self, endpoint_name: str, retry_after_s: float | None) -> None:
        """A 429: widen the shared margin a step; an explicit ``Retry-After`` pauses every process."""
        window = self._fallback.get(endpoint_name)
        if window is not None:
            window.note_throttled(retry_after_s)
        if endpoint_name not in self._shapes or self._degraded:
            return
        self._spawn(self._shared_throttled(endpoint_name, retry_after_s))

    # -- fallback ---------------------------------------------------------------------------------------

    async def _shared_or_local(self, endpoint_name: str, local: Permit | None) -> Permit | None:
        try:
            permit = await self._shared_acquire(endpoint_name)
        except self._outage_errors as exc:
            self._enter_degraded(exc)
            return await self._local_acquire(endpoint_name)
        return _Permits(local, permit) if local is not None else permit

    def _fallback_window(self, endpoint_name: str) -> SlidingWindowLimiter:
        with self._lock:
            window = self._fallback.get(endpoint_name)
            if window is None:
                rate = self._shapes[endpoint_name].rate * self.fallback_share()
                window = SlidingWindowLimiter(rate, margin_s=self._margin_s, smoothing=self._smoothing)
                self._fallback[endpoint_name] = window
            return window

    async def _local_acquire(self, endpoint_name: str) -> Permit:
        window = self._fallback_window(endpoint_name)
        delay = self._hold_until - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        return await window.acquire()

    def _enter_degraded(self, exc: BaseException) -> None:
        with self._lock:
            if self._degraded:
                return
            now = self._clock()
            self._degraded = True
            self._degraded_count += 1
            self._grace_until = -math.inf
            self._next_probe = now + PROBE_INTERVAL_S
            # Hold one full window: sends booked in the backend before the outage and local sends after it
            # then never fall into the same window. Fresh local windows, sized for the current N.
            longest = max((s.window_s for s in self._shapes.values()), default=1.0)
            self._hold_until = now + longest + MAX_MARGIN_S
            self._fallback.clear()
            share = self.fallback_share()
        log.warning(
            "Shared Attentive rate limit (%s) unreachable: %s: %s. Falling back to %.0f%% of each endpoint's "
            "limit in this process (%s) until it answers again.",
            self.backend,
            type(exc).__name__,
            exc,
            100 * share,
            "rate_limit_share" if self._share is not None else f"1/{max(1, self._peers)} limiters seen on this key",
        )

    async def _maybe_recover(self) -> bool:
        with self._lock:
            now = self._clock()
            if not self._degraded:
                return True
            if now < self._next_probe:
                return False
            self._next_probe = now + PROBE_INTERVAL_S
        try:
            await self._probe()
        except self._outage_errors:
            return False
        with self._lock:
            if self._degraded:
                self._degraded = False
                self._grace_until = self._clock() + RECOVERY_GRACE_S
                log.warning("Shared Attentive rate limit (%s) reachable again; using the shared budget", self.backend)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a best-effort backend call in the background (from the transport's event loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return
        task = loop.create_task(self._quietly(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.debug("background rate-limit update failed", exc_info=True)

    # -- backend calls (subclasses) ---------------------------------------------------------------------

    async def _shared_acquire(self, endpoint_name: str) -> Permit | None:
        raise NotImplementedError

    async def _probe(self) -> None:
        raise NotImplementedError

    async def _shared_hold(self, endpoint_name: str, hold_s: float) -> None:
        raise NotImplementedError

    async def _shared_throttled(self, endpoint_name: str, retry_after_s: float | None) -> None:
        raise NotImplementedError
