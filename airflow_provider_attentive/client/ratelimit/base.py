"""What a rate limiter is to the transport (:class:`RateLimiter`, :class:`Permit`) and the window arithmetic.

Attentive counts requests per API key and endpoint in a sliding one-second window and answers 429 beyond
the limit, so the client has to be at least as strict: a 429 costs a full second of waiting, far more than
pacing ourselves. The constants below are shared by every backend (local, Redis, SQL).
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_MARGIN_S",
    "DEFAULT_SMOOTHING",
    "MARGIN_STEP_S",
    "MAX_MARGIN_S",
    "Permit",
    "RateLimiter",
    "trace_extension",
    "window_shape",
]

# Attentive counts a request when it arrives, we when we have written it; the difference varies by a
# few milliseconds (network, a busy server or event loop). Without slack, two requests sent exactly
# one window apart could both land in the same server-side second. 20 ms costs 2% of throughput
# (150 / 1.02 = 147 requests/s); each 429 widens it by MARGIN_STEP_S, up to MAX_MARGIN_S.
DEFAULT_MARGIN_S = 0.02
MARGIN_STEP_S = 0.01
MAX_MARGIN_S = 0.05
# Consecutive starts are kept `smoothing` slots (1 / rate) apart. A uniform stream matters: with
# half-slot spacing the emulator received bursts at twice the rate, queued them, and its arrival
# jitter grew past the margin (dozens of 429s per 3,000 requests on a loaded 2-core machine); with
# full-slot spacing the jitter stayed around 10 ms and no request was refused.
DEFAULT_SMOOTHING = 1.0


class Permit(Protocol):
    """Handed out by :meth:`RateLimiter.acquire` for one request.

    A permit may also define ``async before_send()``: the transport awaits it just before writing the request,
    so a shared backend can take a new slot when the request would otherwise go out late.
    """

    def sent(self) -> None:
        """The request has been written to the connection."""
        ...


@runtime_checkable
class RateLimiter(Protocol):
    """What a transport needs from a limiter; a Redis or SQL backend can implement this too.

    ``acquire`` returns when the caller may start one request to ``endpoint_name``. The ``note_*``
    methods feed back what Attentive said, so a limiter can slow down when its view of the budget was
    too optimistic (for example because another process uses the same key).
    """

    async def acquire(self, endpoint_name: str) -> Permit | None:
        """Wait until one request to ``endpoint_name`` may start.

        May return a :class:`Permit`; the transport calls its ``sent()`` once the request has been
        written to the socket, so the limiter can measure windows from when Attentive sees requests.
        """
        ...

    def note_remaining(self, endpoint_name: str, remaining: int, limit: int | None) -> None:
        """Record Attentive's ``x-ratelimit-remaining`` / ``x-ratelimit-limit`` for an answer."""
        ...

    def note_throttled(self, endpoint_name: str, retry_after_s: float | None) -> None:
        """Record a 429; ``retry_after_s`` is set when Attentive said how long to wait."""
        ...


def window_shape(rate: float, window_s: float = 1.0) -> tuple[int, float]:
    """Return ``(capacity, period)``: at most ``capacity`` starts in any ``period`` seconds.

    The server counts whole requests per one-second window, so "never more than ``rate`` in any
    second" means ``floor(rate)`` per second for ``rate >= 1`` (2.5/s behaves as 2/s: any higher
    average would put 3 requests in some second). Rates below 1 stretch the window instead: 0.5/s is
    one request per two seconds.
    """
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of requests per second, got {rate!r}")
    capacity = max(1, math.floor(rate * window_s + 1e-9))
    period = max(window_s, capacity / rate)
    return capacity, period


def trace_extension(permit: Permit | None) -> dict[str, Any]:
    """An httpcore ``trace`` hook that tells the limiter when the request body has been written.

    That moment, after any connection set-up, is the closest we can observe to when Attentive counts
    the request. A permit may also have an ``async before_send()``: it is awaited just before the request
    headers are written (after any connection set-up), so a limiter can hold back a request that would
    otherwise go out too late for its slot (the SQL backend does).
    """
    if permit is None:
        return {}
    before_send = getattr(permit, "before_send", None)

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            permit.sent()
        elif before_send is not None and event.endswith("send_request_headers.started"):
            await before_send()

    return {"trace": trace}
