"""The emulator's per-key, per-endpoint rate limits and the sliding-window statistics that check them.

Attentive admits a fixed number of requests per second per API key and endpoint; the emulator
enforces the same one-second window, and ``max_window`` measures a request log with the same
inclusion test so ``max_window <= limit`` holds exactly for accepted requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from .endpoints import API_ROUTES, ENDPOINT_NAMES

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_LIMITS",
    "RATE_WINDOW_S",
    "EndpointRateLimit",
    "WindowTracker",
    "max_window",
    "validate_limits",
]

#: The limit reported for paths that are no endpoint (and for endpoints without a configured limit).
DEFAULT_LIMIT = 150
#: Endpoint name -> requests per second, as Attentive documents them.
DEFAULT_LIMITS: dict[str, int] = {name: route.rate_limit for name, route in API_ROUTES.by_name.items()}
RATE_WINDOW_S = 1.0


def max_window(timestamps: Sequence[float], window: float = RATE_WINDOW_S) -> int:
    """Highest number of ``timestamps`` inside any half-open interval ``(t - window, t]``.

    ``timestamps`` must be sorted ascending. Uses the same inclusion test as
    :class:`EndpointRateLimit` (``t - s < window``) so that ``max_window <= limit`` holds exactly
    for accepted requests.
    """
    best = 0
    start = 0
    for end, t in enumerate(timestamps):
        while t - timestamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class WindowTracker:
    """Incremental :func:`max_window` over a stream of non-decreasing timestamps (O(1) amortised)."""

    __slots__ = ("_times", "max", "window")

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self._times: deque[float] = deque()
        self.max = 0

    def add(self, t: float) -> None:
        times = self._times
        times.append(t)
        while t - times[0] >= self.window:
            times.popleft()
        if len(times) > self.max:
            self.max = len(times)


class EndpointRateLimit:
    """Per (API key, endpoint) sliding one-second window over accepted requests."""

    def __init__(self, limits: Mapping[str, int], window: float = RATE_WINDOW_S) -> None:
        self.limits: dict[str, int] = dict(limits)
        self.window = window
        self._buckets: dict[tuple[str, str], deque[float]] = {}

    def limit(self, endpoint: str) -> int:
        return self.limits.get(endpoint, DEFAULT_LIMIT)

    def _bucket(self, key: str, endpoint: str, now: float) -> deque[float]:
        bucket = self._buckets.get((key, endpoint))
        if bucket is None:
            bucket = self._buckets[(key, endpoint)] = deque()
        while bucket and now - bucket[0] >= self.window:
            bucket.popleft()
        return bucket

    def remaining(self, key: str, endpoint: str, now: float) -> int:
        """Requests still allowed in the current window, without consuming one."""
        return max(0, self.limit(endpoint) - len(self._bucket(key, endpoint, now)))

    def acquire(self, key: str, endpoint: str, now: float) -> tuple[bool, int]:
        """Try to admit a request at ``now``; returns (accepted, remaining after this request)."""
        limit = self.limit(endpoint)
        bucket = self._bucket(key, endpoint, now)
        if len(bucket) >= limit:
            return False, 0
        bucket.append(now)
        return True, limit - len(bucket)

    def clear(self) -> None:
        self._buckets.clear()


def validate_limits(limits: Mapping[str, Any], current: Mapping[str, int]) -> dict[str, int]:
    """Check a limits update; ``"*"`` sets every endpoint. Raises ``ValueError``."""
    out: dict[str, int] = {}
    for name, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"limit for {name!r} must be a non-negative integer")
        if name == "*":
            out.update(dict.fromkeys(current, value))
        elif name in API_ROUTES.by_name:
            out[name] = value
        else:
            raise ValueError(f"unknown endpoint {name!r}; known: {list(ENDPOINT_NAMES)}")
    return out
