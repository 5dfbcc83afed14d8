"""The in-process rate limiter: one sliding one-second window per API key and endpoint.

The window is a reservation log: every caller books the earliest start time that keeps the last
``capacity`` bookings ``window + margin`` apart, sleeps until it, and on waking checks the booking
again against the requests that really started (and when their bytes really left). The log is
guarded by a lock, so threads and event loops of several transports can share one limiter;
:class:`LimiterRegistry` makes transports of one process that use one key share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping

from airflow_provider_attentive.client.ratelimit.base import (
    DEFAULT_MARGIN_S,
    DEFAULT_SMOOTHING,
    MARGIN_STEP_S,
    MAX_MARGIN_S,
    Permit,
    window_shape,
)

__all__ = [
    "DEFAULT_REGISTRY",
    "LimiterRegistry",
    "LocalRateLimiter",
    "SlidingWindowLimiter",
    "key_fingerprint",
]

log = logging.getLogger(__name__)


class _Entry:
    """One request in the log: its planned, then actual, start time."""

    __slots__ = ("started", "t")

    def __init__(self, t: float, started: bool = False) -> None:
        self.t = t
        self.started = started


class _WindowPermit:
    """Moves a started entry to the moment its request was really written to the connection.

    Opening a connection or a busy event loop can delay a request by tens of milliseconds after its
    slot; measuring later windows from the earlier time would then let Attentive see more than
    ``rate`` arrivals in one second. Entries only ever move later, which is the safe direction.
    """

    __slots__ = ("_entry", "_limiter")

    def __init__(self, limiter: SlidingWindowLimiter, entry: _Entry) -> None:
        self._limiter = limiter
        self._entry = entry

    def sent(self) -> None:
        self._limiter._mark(self._entry)


class SlidingWindowLimiter:
    """Never lets more than ``rate`` requests start in any one-second window (thread-safe).

    Two steps per request. *Planning* (``reserve()``) books the earliest slot that keeps the last
    ``capacity`` bookings ``period`` apart and tells the caller how long to sleep. *Starting*
    (inside ``acquire()``) re-checks, when the caller wakes, against the requests that have actually
    started: if wake-ups came late or requests went out late, the plan may no longer hold, and the
    caller sleeps again. Every start is checked against every earlier start, so the guarantee holds
    however far ahead requests were planned. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        rate: float,
        *,
        window_s: float = 1.0,
        margin_s: float = DEFAULT_MARGIN_S,
        smoothing: float = DEFAULT_SMOOTHING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if margin_s < 0 or smoothing < 0:
            raise ValueError("margin_s and smoothing must not be negative")
        self._lock = threading.Lock()
        self._clock = clock
        self._window_s = window_s
        self._margin_s = margin_s
        self._smoothing = smoothing
        self._not_before = -math.inf
        self._warned_limit: int | None = None
        # Entries in booking order. Started entries leave once they are well outside any window;
        # pending ones stay until they start or are cancelled.
        self._log: deque[_Entry] = deque()
        self._configure(rate)

    def _configure(self, rate: float) -> None:
        capacity, period = window_shape(rate, self._window_s)
        self._rate = rate
        self._capacity = capacity
        self._window_period = period
        self._period = period + self._margin_s
        self._slot_s = period / capacity
        self._spacing = self._smoothing * self._slot_s

    @property
    def rate(self) -> float:
        """Configured requests per second."""
        return self._rate

    @property
    def capacity(self) -> int:
        """Starts allowed per period (``floor(rate)`` for rates of at least one per second)."""
        return self._capacity

    @property
    def period_s(self) -> float:
        """Length of the enforced window, safety margin included."""
        return self._period

    def lower_rate(self, rate: float) -> None:
        """Adopt ``rate`` if it is lower than the current one (used when limiters are shared)."""
        with self._lock:
            if rate < self._rate:
                self._configure(rate)

    def _prune(self, now: float) -> None:
        # Keep a second of slack so that a late sent() on an old entry can never matter.
        horizon = now - self._period - 1.0
        log = self._log
        while log and log[0].started and log[0].t < horizon:
            log.popleft()

    def _plan(self, started: bool) -> tuple[float, _Entry]:
        with self._lock:
            now = self._clock()
            self._prune(now)
            slot = max(now, self._not_before)
            log = self._log
            if log:
                slot = max(slot, log[-1].t + self._spacing)
                if len(log) >= self._capacity:
                    recent = [log[-i].t for i in range(1, self._capacity + 1)]
                    slot = max(slot, min(recent) + self._period)
            entry = _Entry(slot, started)
            log.append(entry)
            return slot - now, entry

    def _try_start(self, entry: _Entry) -> float:
        """Start ``entry`` now if the started requests allow it; else re-plan it and return the wait."""
        with self._lock:
            now = self._clock()
            if now < self._not_before:
                entry.t = self._not_before
                return self._not_before - now
            low = now - self._period
            times = sorted(e.t for e in self._log if e.started and low < e.t <= now)
            if len(times) >= self._capacity:
                entry.t = times[len(times) - self._capacity] + self._period
                return entry.t - now
            entry.t = now
            entry.started = True
            return 0.0

    def _cancel(self, entry: _Entry) -> None:
        with self._lock:
            if not entry.started:
                with contextlib.suppress(ValueError):
                    self._log.remove(entry)

    def _mark(self, entry: _Entry) -> None:
        with self._lock:
            entry.t = max(entry.t, self._clock())

    def reserve(self) -> float:
        """Book the next start and return the seconds to wait before starting (0 if none).

        For callers that do their own sleeping: the booking counts as a start at the returned time,
        so the caller must not start earlier (later is safe).
        """
        return self._plan(started=True)[0]

    async def acquire(self) -> _WindowPermit:
        """Wait until a request may start; call ``sent()`` on the result once it is written."""
        delay, entry = self._plan(started=False)
        try:
            while True:
                if delay > 0:
                    await asyncio.sleep(delay)
                delay = self._try_start(entry)
                if delay <= 0:
                    return _WindowPermit(self, entry)
        except BaseException:
            # A cancelled request frees its booking instead of holding a slot forever.
            self._cancel(entry)
            raise

    def note_remaining(self, remaining: int, limit: int | None = None) -> None:
        """React to ``x-ratelimit-remaining``: at 0, hold the next start back by one slot.

        Our own log normally keeps us just inside the limit, so a 0 here is routine at full speed; the
        hold matters when Attentive's count is ahead of ours (another process using the key).
        """
        with self._lock:
            if remaining <= 0:
                self._not_before = max(self._not_before, self._clock() + self._slot_s)
            if limit is not None and limit < self._capacity and limit != self._warned_limit:
                self._warned_limit = limit
                log.warning(
                    "Attentive reports a limit of %s requests/s but %s/s is configured; "
                    "lower the connection's rate limit to avoid 429 answers.",
                    limit,
                    self._rate,
                )

    @property
    def margin_s(self) -> float:
        """Current safety margin added to the window."""
        return self._margin_s

    def note_throttled(self, retry_after_s: float | None = None) -> None:
        """React to a 429: widen the margin a step and honour an explicit ``Retry-After``.

        A 429 although our own log kept to the limit means arrivals at Attentive are more jittery than
        the margin allows, so the margin grows (bounded by ``MAX_MARGIN_S``, i.e. >= 95% of the rate).
        Only an explicit ``Retry-After`` pauses the whole endpoint: a bare 429 (what Attentive sends)
        is usually one request squeezed into a full window, and stopping every request for a second
        over it would cost far more than retrying that one.
        """
        with self._lock:
            if self._margin_s < MAX_MARGIN_S:
                self._margin_s = min(MAX_MARGIN_S, self._margin_s + MARGIN_STEP_S)
                self._period = self._window_period + self._margin_s
                log.info("429 from Attentive: widening the rate-limit safety margin to %.0f ms", self._margin_s * 1e3)
            if retry_after_s is not None:
                self._not_before = max(self._not_before, self._clock() + max(0.0, retry_after_s))


class LocalRateLimiter:
    """In-process :class:`RateLimiter`: one :class:`SlidingWindowLimiter` per endpoint name."""

    def __init__(self, limiters: Mapping[str, SlidingWindowLimiter]) -> None:
        self._limiters = dict(limiters)

    def limiter(self, endpoint_name: str) -> SlidingWindowLimiter:
        """The window for one endpoint (``KeyError`` if it has none)."""
        return self._limiters[endpoint_name]

    async def acquire(self, endpoint_name: str) -> Permit:
        """Wait until one request to ``endpoint_name`` may start."""
        return await self._limiters[endpoint_name].acquire()

    def note_remaining(self, endpoint_name: str, remaining: int, limit: int | None) -> None:
        """Forward ``x-ratelimit-remaining`` to the endpoint's window."""
        self._limiters[endpoint_name].note_remaining(remaining, limit)

    def note_throttled(self, endpoint_name: str, retry_after_s: float | None) -> None:
        """Forward a 429 to the endpoint's window."""
        self._limiters[endpoint_name].note_throttled(retry_after_s)


def key_fingerprint(api_key: str) -> str:
    """A short, one-way identifier for an API key, safe to keep in memory, logs or a shared store."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]


class LimiterRegistry:
    """Shares one window per (base URL, API key, endpoint) among all transports of a process.

    Two transports (say, two operators in one worker) using the same key draw from the same budget,
    so they must share the limiter. Keys are stored as a SHA-256 fingerprint, never in clear. Windows
    live as long as some transport holds them. If transports ask for different rates, the shared
    window uses the lowest, since exceeding the budget hurts every user of the key.
    """

    def __init__(self, *, margin_s: float = DEFAULT_MARGIN_S, smoothing: float = DEFAULT_SMOOTHING) -> None:
        self._lock = threading.Lock()
        self._margin_s = margin_s
        self._smoothing = smoothing
        self._windows: weakref.WeakValueDictionary[tuple[str, str, str], SlidingWindowLimiter] = (
            weakref.WeakValueDictionary()
        )

    def limiter_for(self, base_url: str, api_key: str, rates: Mapping[str, float]) -> LocalRateLimiter:
        """Return a limiter with one shared window per endpoint in ``rates``."""
        fingerprint = key_fingerprint(api_key)
        windows: dict[str, SlidingWindowLimiter] = {}
        with self._lock:
            for name, rate in rates.items():
                key = (base_url, fingerprint, name)
                window = self._windows.get(key)
                if window is None:
                    window = SlidingWindowLimiter(rate, margin_s=self._margin_s, smoothing=self._smoothing)
                    self._windows[key] = window
                elif rate < window.rate:
                    log.info("Lowering the shared %s limit to %s requests/s", name, rate)
                    window.lower_rate(rate)
                windows[name] = window
        return LocalRateLimiter(windows)


DEFAULT_REGISTRY = LimiterRegistry()
