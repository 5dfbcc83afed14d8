"""Rate budgets shared by several processes: Redis and SQL backends for the transport's ``RateLimiter``.

Pure Python (no Airflow imports). Attentive's limits are per API key and endpoint, so when several tasks
in several processes (Celery workers, parallel backfill intervals) use one key, an in-process limiter per
task is not enough: together they would send N times the limit. The limiters here keep the budget in a
store every such deployment already has.

``RedisRateLimiter`` (connection extra ``rate_limit_backend = "redis"``) keeps the same reservation log
as :class:`~airflow_provider_attentive.hooks.ratelimit.SlidingWindowLimiter`, in Redis, updated by Lua
scripts (atomic) in Redis server time, so no clock has to agree with another:

* *reserve* books the earliest start that is one slot (``1 / rate``) after the latest booking of any
  process and one window plus the safety margin after the ``capacity``-th latest, so the combined
  stream stays evenly spaced, as the local limiter's does;
* *start*, when the caller wakes, re-checks against the requests every process has really started and
  re-plans when the window is full (late wake-ups cannot squeeze a window);
* when a request's bytes left noticeably later than its start (a new connection, a busy loop), *mark*
  moves its entry later, so other processes measure the window from when Attentive saw it.

Keys are named after a fingerprint of the base URL and API key (never the key itself) and expire on
their own. A 429 widens the shared safety margin for every process; ``Retry-After`` and
``x-ratelimit-remaining: 0`` hold every process back.

``SqlRateLimiter`` (``rate_limit_backend = "sql"``) needs nothing but a DB-API connection and portable SQL:
one row per key fingerprint and endpoint holds the next free slot, advanced by a compare-and-swap on a
version column. Slots are spaced ``(1 s + margin) / rate`` apart in wall-clock time (hosts must be
NTP-synchronised; skew eats into the margin; the default margin is 50 ms). A request that is about to go
out more than half the margin after its slot (checked when it wakes and again just before its headers are
written) books a new one and leaves the old slot unused. Each booking is a database round trip, so it suits
low rates (subscribe, unsubscribe, identity: 5-10 requests/s) best; at 150 requests/s prefer Redis.

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
import concurrent.futures
import contextlib
import functools
import hashlib
import itertools
import logging
import math
import os
import random
import re
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from airflow_provider_attentive.hooks.ratelimit import (
    DEFAULT_MARGIN_S,
    DEFAULT_SMOOTHING,
    MARGIN_STEP_S,
    MAX_MARGIN_S,
    Permit,
    SlidingWindowLimiter,
    window_shape,
)

__all__ = [
    "BACKENDS",
    "RateLimitBackendUnavailable",
    "RedisRateLimiter",
    "SqlRateLimiter",
    "budget_fingerprint",
    "redact_url",
]

log = logging.getLogger(__name__)

BACKENDS = ("local", "redis", "sql")

# A limiter counts as a peer (for the outage fallback's 1/N) if it booked within this horizon.
PEER_HORIZON_S = 600.0
# While degraded, the backend is probed at most this often.
PROBE_INTERVAL_S = 1.0
# After the backend comes back, keep to the local share this long as well (see the module docstring).
RECOVERY_GRACE_S = 3.0
# Redis entries older than a window plus this are dropped; keys expire after this long without use.
_LOG_SLACK_US = 2_000_000
_KEY_TTL_MS = 120_000
_STATE_TTL_MS = 3_600_000
# A request whose bytes left more than this after its start was granted gets its entry moved later.
MARK_THRESHOLD_S = 0.002
# The SQL backend cannot re-check starts, so it gets a wider default margin.
SQL_DEFAULT_MARGIN_S = 0.05
_SQL_MAX_LATE_REBOOKS = 5
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class RateLimitBackendUnavailable(ConnectionError):
    """The shared rate-limit backend could not be reached when the limiter was created."""


def budget_fingerprint(base_url: str, api_key: str) -> str:
    """A one-way identifier for one budget (base URL and API key): what the shared stores are keyed by."""
    return hashlib.sha256(f"{base_url}\0{api_key}".encode()).hexdigest()[:16]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for error messages and logs)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    with contextlib.suppress(ValueError):
        if parts.port is not None:
            netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _Shape:
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


class _SharedRateLimiter:
    """The fallback machinery common to the shared backends; subclasses provide the shared calls."""

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
        self._shapes = {name: _Shape(float(rate), smoothing) for name, rate in rates.items()}
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


# ------------------------------------------------------------------------------------------------- Redis --

# All times are integer microseconds of Redis server time (TIME); Lua numbers are doubles, exact up to 2^53.
# Numbers are put into strings with string.format('%d') because Lua's own tostring keeps only 14 digits.
_LUA_PREAMBLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS: plan, started, state, clients. ARGV: member, client, capacity, window_us, spacing_us, margin_us,
# peer_horizon_us, key_ttl_ms. Returns {delay_us, peers, margin_us}.
_RESERVE = (
    _LUA_PREAMBLE
    + """
local capacity = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[3], 'margin', 'not_before')
local margin = tonumber(state[1]) or tonumber(ARGV[6])
local period = tonumber(ARGV[4]) + margin
local horizon = string.format('%d', now - period - 2000000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. horizon)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. horizon)
local slot = now
local not_before = tonumber(state[2])
if not_before and not_before > slot then slot = not_before end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then slot = math.max(slot, tonumber(last[2]) + tonumber(ARGV[5])) end
if redis.call('ZCARD', KEYS[1]) >= capacity then
  local kth = redis.call('ZRANGE', KEYS[1], -capacity, -capacity, 'WITHSCORES')
  slot = math.max(slot, tonumber(kth[2]) + period)
end
redis.call('ZADD', KEYS[1], slot, ARGV[1])
redis.call('ZADD', KEYS[4], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.format('%d', now - tonumber(ARGV[7])))
local ttl = tonumber(ARGV[8])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[7]) / 1000)
return {slot - now, redis.call('ZCARD', KEYS[4]), margin}
"""
)

# KEYS: plan, started, state. ARGV: member, capacity, window_us, margin_us, key_ttl_ms.
# Returns 0 when the request may start now (it is then logged as started), else the microseconds to wait.
_START = (
    _LUA_PREAMBLE
    + """
local capacity = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[3], 'margin', 'not_before')
local margin = tonumber(state[1]) or tonumber(ARGV[4])
local period = tonumber(ARGV[3]) + margin
local not_before = tonumber(state[2])
if not_before and now < not_before then
  redis.call('ZADD', KEYS[1], not_before, ARGV[1])
  return not_before - now
end
local recent = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. string.format('%d', now - period), '+inf', 'WITHSCORES')
local n = #recent / 2
if n >= capacity then
  local retry_at = tonumber(recent[2 * (n - capacity) + 2]) + period
  if retry_at > now then
    redis.call('ZADD', KEYS[1], retry_at, ARGV[1])
    return retry_at - now
  end
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
return 0
"""
)

# KEYS: plan, started. ARGV: member, delta_us. Moves a started entry later by delta_us.
_MARK = """
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if s then
  local t = tonumber(s) + tonumber(ARGV[2])
  redis.call('ZADD', KEYS[2], t, ARGV[1])
  redis.call('ZADD', KEYS[1], 'XX', t, ARGV[1])
end
return 0
"""

# KEYS: plan, started. ARGV: member. Frees a booking that never started.
_CANCEL = """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""

# KEYS: state. ARGV: hold_us, state_ttl_ms. Nobody starts before now + hold_us.
_HOLD = (
    _LUA_PREAMBLE
    + """
local until_us = now + tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'not_before'))
if not current or current < until_us then redis.call('HSET', KEYS[1], 'not_before', string.format('%d', until_us)) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 0
"""
)

# KEYS: state. ARGV: default_margin_us, step_us, max_margin_us, state_ttl_ms. Returns the new margin.
_WIDEN = """
local margin = tonumber(redis.call('HGET', KEYS[1], 'margin')) or tonumber(ARGV[1])
if margin < tonumber(ARGV[3]) then
  margin = math.min(tonumber(ARGV[3]), margin + tonumber(ARGV[2]))
  redis.call('HSET', KEYS[1], 'margin', string.format('%d', margin))
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return margin
"""

# KEYS: clients. ARGV: client, horizon_us. Registers a limiter; returns the number seen within the horizon.
_REGISTER = (
    _LUA_PREAMBLE
    + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now - tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) / 1000)
return redis.call('ZCARD', KEYS[1])
"""
)

_SCRIPTS = {
    "reserve": _RESERVE,
    "start": _START,
    "mark": _MARK,
    "cancel": _CANCEL,
    "hold": _HOLD,
    "widen": _WIDEN,
    "register": _REGISTER,
}


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
    except ImportError as exc:
        raise ValueError(
            "rate_limit_backend 'redis' needs the redis package: pip install 'airflow-provider-attentive[redis]'"
        ) from exc
    return redis


class _RedisPermit:
    __slots__ = ("_called_at", "_endpoint", "_limiter", "_member")

    def __init__(self, limiter: RedisRateLimiter, endpoint: str, member: str, called_at: float) -> None:
        self._limiter = limiter
        self._endpoint = endpoint
        self._member = member
        self._called_at = called_at

    def sent(self) -> None:
        # Measured from before the start call, so the delta is never too small.
        delta = time.monotonic() - self._called_at
        if delta > MARK_THRESHOLD_S:
            self._limiter._spawn(self._limiter._mark(self._endpoint, self._member, delta))


class RedisRateLimiter(_SharedRateLimiter):
    """A :class:`~airflow_provider_attentive.hooks.ratelimit.RateLimiter` whose budget lives in Redis.

    ``rates`` maps endpoint names to requests per second; ``share`` is the fallback share used while
    Redis is unreachable (``None``: 1/N). Creating one checks that Redis answers, else raises
    :class:`RateLimitBackendUnavailable`. Thread-safe; usable from several event loops (one Redis client
    per loop). Call :meth:`aclose` on each loop that used it and :meth:`close` when done.
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        base_url: str,
        api_key: str,
        rates: Mapping[str, float],
        share: float | None = None,
        margin_s: float = DEFAULT_MARGIN_S,
        smoothing: float = DEFAULT_SMOOTHING,
        timeout_s: float = 2.0,
        prefix: str = "attentive:ratelimit",
    ) -> None:
        super().__init__(
            base_url=base_url, api_key=api_key, rates=rates, share=share, margin_s=margin_s, smoothing=smoothing
        )
        redis = _import_redis()
        if not url or not isinstance(url, str):
            raise ValueError("rate_limit_backend 'redis' needs rate_limit_redis_url (e.g. redis://redis:6379/2)")
        self._redis = redis
        self._url = url
        self._timeout_s = timeout_s
        self._outage_errors = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)
        tag = f"{prefix}:{{{self._fingerprint}}}"
        self._clients_key = f"{tag}:clients"
        self._keys = {
            name: [f"{tag}:{name}:plan", f"{tag}:{name}:started", f"{tag}:{name}:state"] for name in self._shapes
        }
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )
        try:
            self._sync = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        except ValueError as exc:
            raise ValueError(f"rate_limit_redis_url {redact_url(url)!r} is not a Redis URL: {exc}") from None
        try:
            self._peers = int(
                self._sync.eval(_REGISTER, 1, self._clients_key, self._client_id, int(PEER_HORIZON_S * 1e6))
            )
        except (redis.exceptions.RedisError, OSError) as exc:
            self._sync.close()
            raise RateLimitBackendUnavailable(
                f"rate_limit_backend 'redis': cannot reach Redis at {redact_url(url)} "
                f"({type(exc).__name__}: {exc}). Start Redis or fix the connection's rate_limit_redis_url; "
                "to sync without a shared budget set rate_limit_backend to 'local'."
            ) from None

    def __repr__(self) -> str:
        return f"RedisRateLimiter({redact_url(self._url)!r}, fingerprint={self._fingerprint!r})"

    def _client(self) -> tuple[Any, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop)
        if entry is None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = self._redis.asyncio.Redis.from_url(
                self._url,
                socket_timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                # One retry on a fresh connection (a pooled one may have died with a Redis restart).
                retry=Retry(NoBackoff(), 1),
            )
            scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
            entry = (client, scripts)
            with self._lock:
                self._loops[loop] = entry
        return entry

    async def _shared_acquire(self, endpoint_name: str) -> Permit | None:
        _, scripts = self._client()
        shape = self._shapes[endpoint_name]
        keys = self._keys[endpoint_name]
        member = f"{self._client_id}:{next(self._seq)}"
        window_us = int(shape.window_s * 1e6)
        margin_us = int(self._margin_s * 1e6)
        delay_us, peers, _ = await scripts["reserve"](
            keys=[*keys, self._clients_key],
            args=[
                member,
                self._client_id,
                shape.capacity,
                window_us,
                int(shape.spacing_s * 1e6),
                margin_us,
                int(PEER_HORIZON_S * 1e6),
                _KEY_TTL_MS,
            ],
        )
        self._peers = max(1, int(peers))
        delay_us = int(delay_us)
        try:
            while True:
                if delay_us > 0:
                    await asyncio.sleep(delay_us / 1e6)
                called_at = time.monotonic()
                delay_us = int(
                    await scripts["start"](keys=keys, args=[member, shape.capacity, window_us, margin_us, _KEY_TTL_MS])
                )
                if delay_us <= 0:
                    return _RedisPermit(self, endpoint_name, member, called_at)
        except self._outage_errors:
            raise
        except BaseException:
            # Cancelled (or a bug): free the booking instead of holding a slot until it ages out.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(scripts["cancel"](keys=keys[:2], args=[member]), 0.5)
            raise

    async def _mark(self, endpoint_name: str, member: str, delta_s: float) -> None:
        _, scripts = self._client()
        await scripts["mark"](keys=self._keys[endpoint_name][:2], args=[member, int(delta_s * 1e6)])

    async def _probe(self) -> None:
        _, scripts = self._client()
        self._peers = max(
            1,
            int(await scripts["register"](keys=[self._clients_key], args=[self._client_id, int(PEER_HORIZON_S * 1e6)])),
        )

    async def _shared_hold(self, endpoint_name: str, hold_s: float) -> None:
        _, scripts = self._client()
        await scripts["hold"](keys=[self._keys[endpoint_name][2]], args=[int(hold_s * 1e6), _STATE_TTL_MS])

    async def _shared_throttled(self, endpoint_name: str, retry_after_s: float | None) -> None:
        _, scripts = self._client()
        state = [self._keys[endpoint_name][2]]
        margin_us = await scripts["widen"](
            keys=state,
            args=[int(self._margin_s * 1e6), int(MARGIN_STEP_S * 1e6), int(MAX_MARGIN_S * 1e6), _STATE_TTL_MS],
        )
        log.info(
            "429 from Attentive: shared rate-limit safety margin for %s is now %.0f ms", endpoint_name, margin_us / 1e3
        )
        if retry_after_s is not None and retry_after_s > 0:
            await scripts["hold"](keys=state, args=[int(retry_after_s * 1e6), _STATE_TTL_MS])

    async def aclose(self) -> None:
        """Close the Redis client of the running event loop (call from each loop that used this limiter)."""
        loop = asyncio.get_running_loop()
        tasks = [t for t in self._tasks if t.get_loop() is loop and not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        with self._lock:
            entry = self._loops.pop(loop, None)
        if entry is not None:
            with contextlib.suppress(Exception):
                await entry[0].aclose()

    def close(self) -> None:
        """Leave the key's list of peers and close the synchronous client (idempotent)."""
        sync, self._sync = self._sync, None
        if sync is None:
            return
        with contextlib.suppress(Exception):
            sync.zrem(self._clients_key, self._client_id)
        with contextlib.suppress(Exception):
            sync.close()


# --------------------------------------------------------------------------------------------------- SQL --


class _SqlPermit:
    """A booked slot; :meth:`before_send` (awaited by the transport just before the request is written)
    takes a new slot if the request is about to go out too late for this one."""

    __slots__ = ("endpoint", "limiter", "slot")

    def __init__(self, limiter: SqlRateLimiter, endpoint: str, slot: float) -> None:
        self.limiter = limiter
        self.endpoint = endpoint
        self.slot = slot

    async def before_send(self) -> None:
        await self.limiter._before_send(self)

    def sent(self) -> None:
        pass


class SqlRateLimiter(_SharedRateLimiter):
    """A :class:`~airflow_provider_attentive.hooks.ratelimit.RateLimiter` whose budget is a SQL table.

    ``connect`` opens a DB-API connection (called in the limiter's own worker thread, which then owns
    it); ``placeholder`` is the driver's parameter marker (``?`` for sqlite3, ``%s`` for psycopg2).
    The table (default ``attentive_rate_limit``) is created if missing: one row per budget fingerprint
    and endpoint (``next_slot_us``, ``version``), plus one heartbeat row per live limiter. Creating one
    checks that the database answers, else raises :class:`RateLimitBackendUnavailable`. Best for low
    rates; see the module docstring.
    """

    backend = "sql"

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        base_url: str,
        api_key: str,
        rates: Mapping[str, float],
        share: float | None = None,
        placeholder: str = "?",
        table: str = "attentive_rate_limit",
        margin_s: float = SQL_DEFAULT_MARGIN_S,
        smoothing: float = DEFAULT_SMOOTHING,
        timeout_s: float = 2.0,
        description: str = "the rate-limit database",
    ) -> None:
        super().__init__(
            base_url=base_url, api_key=api_key, rates=rates, share=share, margin_s=margin_s, smoothing=smoothing
        )
        if not _TABLE_NAME.match(table):
            raise ValueError(f"invalid rate-limit table name {table!r}")
        self._connect = connect
        self._p = placeholder
        self._table = table
        self._timeout_s = timeout_s
        self._description = description
        self._outage_errors = (Exception,)
        self._conn: Any = None
        self._lead_s = 0.002
        self._not_before: dict[str, float] = {}
        self._margins: dict[str, float] = {}
        self._heartbeat_due = 0.0
        self._executor: concurrent.futures.ThreadPoolExecutor | None = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="attentive-sql-ratelimit"
        )
        try:
            self._executor.submit(self._setup).result()
        except Exception as exc:
            self.close()
            raise RateLimitBackendUnavailable(
                f"rate_limit_backend 'sql': cannot use {description} ({type(exc).__name__}: {exc}). Check the "
                "database behind rate_limit_sql_conn_id; to sync without a shared budget set rate_limit_backend "
                "to 'local'."
            ) from None

    def __repr__(self) -> str:
        return f"SqlRateLimiter({self._description!r}, table={self._table!r}, fingerprint={self._fingerprint!r})"

    # -- worker-thread side --------------------------------------------------------------------------------

    def _db(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _rollback(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.rollback()

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, int]:
        cur = self._db().cursor()
        try:
            cur.execute(sql.replace("?", self._p), params)
            row = cur.fetchone() if cur.description else None
            return row, cur.rowcount
        finally:
            with contextlib.suppress(Exception):
                cur.close()

    def _setup(self) -> None:
        try:
            self._execute(f"SELECT bucket FROM {self._table} WHERE 1 = 0")
            self._db().commit()
        except Exception:
            self._rollback()
            try:
                self._execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table} (bucket VARCHAR(120) NOT NULL PRIMARY KEY, "
                    "next_slot_us BIGINT NOT NULL, version BIGINT NOT NULL)"
                )
                self._db().commit()
            except Exception:
                # Another process may have created it at the same moment; the check below decides.
                self._rollback()
            self._execute(f"SELECT bucket FROM {self._table} WHERE 1 = 0")
            self._db().commit()
        self._heartbeat()

    def _client_bucket(self) -> str:
        return f"{self._fingerprint}:client:{self._client_id}"

    def _heartbeat(self) -> None:
        """Refresh this limiter's heartbeat row, drop stale ones, count live ones (the N of 1/N)."""
        now = _wall_us()
        horizon = now - int(PEER_HORIZON_S * 1e6)
        mine = self._client_bucket()
        _, updated = self._execute(f"UPDATE {self._table} SET next_slot_us = ? WHERE bucket = ?", (now, mine))
        if updated != 1:
            self._execute(f"INSERT INTO {self._table} (bucket, next_slot_us, version) VALUES (?, ?, 0)", (mine, now))
        like = f"{self._fingerprint}:client:%"
        self._execute(f"DELETE FROM {self._table} WHERE bucket LIKE ? AND next_slot_us < ?", (like, horizon))
        row, _ = self._execute(f"SELECT COUNT(*) FROM {self._table} WHERE bucket LIKE ?", (like,))
        self._db().commit()
        self._peers = max(1, int(row[0]) if row else 1)
        self._heartbeat_due = time.monotonic() + 10.0

    def _book(self, endpoint_name: str, spacing_us: int, not_before_us: int) -> int:
        """Compare-and-swap the endpoint's next free slot; return the slot booked (wall-clock microseconds)."""
        bucket = f"{self._fingerprint}:{endpoint_name}"
        deadline = time.monotonic() + self._timeout_s
        lead_us = int(self._lead_s * 1e6)
        while True:
            try:
                if time.monotonic() >= self._heartbeat_due:
                    self._heartbeat()
                now = _wall_us()
                row, _ = self._execute(f"SELECT next_slot_us, version FROM {self._table} WHERE bucket = ?", (bucket,))
                if row is None:
                    slot = max(now + lead_us, not_before_us)
                    self._execute(
                        f"INSERT INTO {self._table} (bucket, next_slot_us, version) VALUES (?, ?, 1)",
                        (bucket, slot + spacing_us),
                    )
                    swapped = True
                else:
                    slot = max(int(row[0]), now + lead_us, not_before_us)
                    _, count = self._execute(
                        f"UPDATE {self._table} SET next_slot_us = ?, version = version + 1 "
                        "WHERE bucket = ? AND version = ?",
                        (slot + spacing_us, bucket, int(row[1])),
                    )
                    swapped = count == 1
                if swapped:
                    self._db().commit()
                    return slot
                self._rollback()
            except Exception:
                # Lock contention (SQLite's "database is locked"), a lost insert race, or an outage: retry
                # until the deadline, on a fresh connection in case this one is broken.
                self._rollback()
                if time.monotonic() >= deadline:
                    self._drop_connection()
                    raise
                time.sleep(random.uniform(0.001, 0.005))

    def _push(self, endpoint_name: str, until_us: int) -> None:
        bucket = f"{self._fingerprint}:{endpoint_name}"
        try:
            self._execute(
                f"UPDATE {self._table} SET next_slot_us = ?, version = version + 1 WHERE bucket = ? AND next_slot_us < ?",
                (until_us, bucket, until_us),
            )
            self._db().commit()
        except Exception:
            self._rollback()
            raise

    def _ping(self) -> None:
        try:
            self._heartbeat()
        except Exception:
            self._rollback()
            self._drop_connection()
            raise

    def _goodbye(self) -> None:
        try:
            self._execute(f"DELETE FROM {self._table} WHERE bucket = ?", (self._client_bucket(),))
            self._db().commit()
        except Exception:
            self._rollback()
        finally:
            self._drop_connection()

    # -- loop side -----------------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], Any]) -> Any:
        executor = self._executor
        if executor is None:
            raise RuntimeError("the SQL rate limiter is closed")
        return await asyncio.wrap_future(executor.submit(fn))

    def _margin(self, endpoint_name: str) -> float:
        return self._margins.get(endpoint_name, self._margin_s)

    async def _book_and_wait(self, endpoint_name: str) -> float:
        """Book the endpoint's next free slot and sleep until it; return the slot (wall-clock seconds)."""
        shape = self._shapes[endpoint_name]
        # Strict spacing: any `capacity + 1` consecutive starts span a window plus the margin.
        spacing_us = math.ceil((shape.window_s + self._margin(endpoint_name)) / shape.capacity * 1e6)
        not_before_us = int(self._not_before.get(endpoint_name, 0.0) * 1e6)
        began = time.time()
        slot_us = await self._run(functools.partial(self._book, endpoint_name, spacing_us, not_before_us))
        took = time.time() - began
        # Book a little ahead of "now" so the booking's own round trip does not make us late.
        self._lead_s = min(0.1, 0.8 * self._lead_s + 0.2 * (1.5 * took + 0.001))
        slot = slot_us / 1e6
        delay = slot - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return slot

    async def _on_time(self, endpoint_name: str, slot: float) -> float:
        """Return a slot we are on time for: ``slot``, or new ones while we keep being late for them.

        Other processes' slots assume ours goes out at its time; a request more than half the margin late
        would squeeze their window, so it takes a new slot instead (the old one stays unused).
        """
        for _ in range(_SQL_MAX_LATE_REBOOKS):
            if time.time() - slot <= self._margin(endpoint_name) / 2:
                return slot
            slot = await self._book_and_wait(endpoint_name)
        raise TimeoutError(f"the SQL rate-limit backend is too slow: {_SQL_MAX_LATE_REBOOKS} late slots in a row")

    async def _shared_acquire(self, endpoint_name: str) -> Permit | None:
        slot = await self._on_time(endpoint_name, await self._book_and_wait(endpoint_name))
        return _SqlPermit(self, endpoint_name, slot)

    async def _before_send(self, permit: _SqlPermit) -> None:
        """Last check, right before the request's bytes are written (after any connection set-up)."""
        if self._degraded:
            return
        try:
            permit.slot = await self._on_time(permit.endpoint, permit.slot)
        except self._outage_errors as exc:
            self._enter_degraded(exc)
            await self._local_acquire(permit.endpoint)

    async def _probe(self) -> None:
        await self._run(self._ping)

    async def _shared_hold(self, endpoint_name: str, hold_s: float) -> None:
        with self._lock:
            until = time.time() + hold_s
            self._not_before[endpoint_name] = max(self._not_before.get(endpoint_name, 0.0), until)

    async def _shared_throttled(self, endpoint_name: str, retry_after_s: float | None) -> None:
        with self._lock:
            self._margins[endpoint_name] = min(MAX_MARGIN_S * 2, self._margin(endpoint_name) + MARGIN_STEP_S)
        if retry_after_s is not None and retry_after_s > 0:
            await self._run(functools.partial(self._push, endpoint_name, _wall_us() + int(retry_after_s * 1e6)))

    async def aclose(self) -> None:
        """Nothing is bound to an event loop; present for symmetry with :class:`RedisRateLimiter`."""

    def close(self) -> None:
        """Remove this limiter's heartbeat row, close the connection and stop the worker thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        with contextlib.suppress(Exception):
            executor.submit(self._goodbye).result(timeout=self._timeout_s + 1)
        executor.shutdown(wait=False)


def _wall_us() -> int:
    return int(time.time() * 1e6)
