"""The shared rate budget in Redis (connection extra ``rate_limit_backend = "redis"``).

:class:`RedisRateLimiter` keeps the same reservation log as
:class:`~airflow_provider_attentive.client.ratelimit.local.SlidingWindowLimiter`, in Redis, updated by Lua
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
``x-ratelimit-remaining: 0`` hold every process back. Outages fall back to a local share (see
:mod:`~airflow_provider_attentive.client.ratelimit.shared`). The ``redis`` package is imported only when
a limiter is created (extra ``airflow-provider-attentive[redis]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Mapping
from typing import Any

from airflow_provider_attentive.client.ratelimit.base import (
    DEFAULT_MARGIN_S,
    DEFAULT_SMOOTHING,
    MARGIN_STEP_S,
    MAX_MARGIN_S,
    Permit,
)
from airflow_provider_attentive.client.ratelimit.shared import (
    PEER_HORIZON_S,
    RateLimitBackendUnavailable,
    SharedRateLimiter,
)
from airflow_provider_attentive.client.scrub import redact_url, scrub, url_secrets

__all__ = ["RedisRateLimiter"]

log = logging.getLogger(__name__)

# Keys expire after this long without use: the reservation logs, and a budget's margin and hold state.
_KEY_TTL_MS = 120_000
_STATE_TTL_MS = 3_600_000
# A request whose bytes left more than this after its start was granted gets its entry moved later.
MARK_THRESHOLD_S = 0.002

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


class RedisRateLimiter(SharedRateLimiter):
    """A :class:`~airflow_provider_attentive.client.ratelimit.base.RateLimiter` whose budget lives in Redis.

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
            raise ValueError(
                f"rate_limit_redis_url {redact_url(url)!r} is not a Redis URL: {scrub(str(exc), url_secrets(url))}"
            ) from None
        try:
            self._peers = int(
                self._sync.eval(_REGISTER, 1, self._clients_key, self._client_id, int(PEER_HORIZON_S * 1e6))
            )
        except (redis.exceptions.RedisError, OSError) as exc:
            self._sync.close()
            detail = scrub(str(exc), url_secrets(url))
            raise RateLimitBackendUnavailable(
                f"rate_limit_backend 'redis': cannot reach Redis at {redact_url(url)} "
                f"({type(exc).__name__}: {detail}). Start Redis or fix the connection's rate_limit_redis_url; "
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
