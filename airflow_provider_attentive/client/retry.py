"""The retry policy: which failures are retried, how long to wait, and when to give up.

The transport runs a small loop around it; the decisions themselves live here so they can be tested
without a server:

* 2xx -> OK.
* 429 -> wait ``Retry-After`` (seconds or HTTP-date) or about a second, then try again. A 429 is not a
  failed attempt, Attentive simply asked us to wait; only the total time spent throttled is capped.
* 408, 5xx, network errors -> exponential backoff with full jitter, up to ``max_attempts``.
* other 4xx -> permanent: retrying an invalid body or a bad key gives the same answer.
* non-idempotent endpoints (subscribe, unsubscribe) -> never resent when the first try may have
  reached Attentive; see :func:`may_have_been_sent`. For subscribe and unsubscribe a 5xx answer is in doubt
  too (it may come after the write), since a repeat texts the person.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

from airflow_provider_attentive.client.models import RequestOutcome

__all__ = [
    "Decision",
    "RetryPolicy",
    "RetryState",
    "is_local_error",
    "may_have_been_sent",
    "parse_retry_after",
]


@dataclass(frozen=True)
class Decision:
    """What to do after one try: stop with ``outcome``, or (``outcome is None``) wait and retry."""

    outcome: RequestOutcome | None
    delay_s: float = 0.0
    reason: str = ""

    @property
    def retry(self) -> bool:
        """True if the request should be sent again after ``delay_s``."""
        return self.outcome is None


@dataclass
class RetryState:
    """Per-request counters the policy updates as tries come back."""

    attempts: int = 0
    throttled: int = 0
    throttled_s: float = 0.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


# Raised before any byte of the request left this machine: always safe to send again.
_NOT_SENT: tuple[type[BaseException], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Our own mistakes (bad URL, invalid header); sending again would fail the same way.
_LOCAL: tuple[type[BaseException], ...] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.InvalidURL,
)


def may_have_been_sent(exc: BaseException) -> bool:
    """True if, after ``exc``, Attentive may have received (and applied) the request.

    Read timeouts, resets and "server disconnected" (``RemoteProtocolError``) happen after the request
    was written; a write error may come after the last byte. Only connection set-up failures prove
    that nothing was sent.
    """
    return not isinstance(exc, _NOT_SENT + _LOCAL)


def is_local_error(exc: BaseException) -> bool:
    """True for errors caused by the request itself, which no retry can fix."""
    return isinstance(exc, _LOCAL)


@dataclass(frozen=True)
class RetryPolicy:
    """Retry settings and decisions. ``rng`` and ``now`` parameters make every decision reproducible."""

    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    throttle_default_s: float = 1.0
    throttle_jitter_s: float = 0.5
    max_throttle_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0 or self.max_throttle_s < 0:
            raise ValueError("backoff and throttle durations must not be negative")

    def backoff_s(self, failures: int, rng: random.Random | None = None) -> float:
        """Full-jitter backoff after the ``failures``-th failed attempt (1-based)."""
        uniform = rng.uniform if rng is not None else random.uniform
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, failures - 1))
        return uniform(0.0, ceiling)

    def throttle_wait_s(
        self, retry_after: str | None, rng: random.Random | None = None, *, now: float | None = None
    ) -> float:
        """How long to wait after a 429: ``Retry-After`` if usable, else about a second, plus jitter."""
        uniform = rng.uniform if rng is not None else random.uniform
        asked = parse_retry_after(retry_after, now=now)
        if asked is not None:
            # A little jitter so that many requests told to come back "in 1 s" do not all return at once.
            return min(asked, self.max_throttle_s) + uniform(0.0, 0.1)
        return self.throttle_default_s + uniform(0.0, self.throttle_jitter_s)

    def after_status(
        self,
        state: RetryState,
        status: int,
        retry_after: str | None = None,
        rng: random.Random | None = None,
        *,
        now: float | None = None,
        notifies_on_repeat: bool = False,
    ) -> Decision:
        """Decide after an HTTP answer with ``status``; updates ``state``.

        ``notifies_on_repeat``: the request texts the person when applied twice (subscribe, unsubscribe), so a
        5xx, which does not say whether it was applied first (a gateway timeout after the write), is in doubt.
        """
        if 200 <= status < 300:
            state.attempts += 1
            return Decision(RequestOutcome.OK)
        if status == 429:
            state.throttled += 1
            wait = self.throttle_wait_s(retry_after, rng, now=now)
            if state.throttled_s + wait > self.max_throttle_s:
                return Decision(
                    RequestOutcome.FAILED,
                    reason=f"still rate limited after waiting {state.throttled_s:.0f} s in total",
                )
            state.throttled_s += wait
            return Decision(None, wait, "rate limited (429)")
        state.attempts += 1
        if status >= 500 and notifies_on_repeat:
            return Decision(RequestOutcome.IN_DOUBT, reason=f"HTTP {status}: Attentive may have applied it")
        if status == 408 or status >= 500:
            if state.attempts >= self.max_attempts:
                return Decision(RequestOutcome.FAILED, reason=f"gave up after {state.attempts} attempts")
            delay = self.backoff_s(state.attempts, rng)
            asked = parse_retry_after(retry_after, now=now) if status == 503 else None
            if asked is not None:
                delay = max(delay, min(asked, self.backoff_max_s))
            return Decision(None, delay, f"HTTP {status}")
        return Decision(RequestOutcome.REJECTED)

    def after_error(
        self, state: RetryState, exc: BaseException, idempotent: bool, rng: random.Random | None = None
    ) -> Decision:
        """Decide after a network-level failure (no HTTP answer); updates ``state``."""
        state.attempts += 1
        if is_local_error(exc):
            return Decision(RequestOutcome.FAILED, reason="the request could not be sent")
        if not idempotent and may_have_been_sent(exc):
            # Subscribe/unsubscribe text the person again when repeated, so a request Attentive may
            # already have applied is not resent: the caller checks the subscription state instead.
            # Connect failures (nothing was sent), 429s and 5xx answers are still retried.
            return Decision(RequestOutcome.IN_DOUBT, reason="the request may have reached Attentive")
        if state.attempts >= self.max_attempts:
            return Decision(RequestOutcome.FAILED, reason=f"gave up after {state.attempts} attempts")
        return Decision(None, self.backoff_s(state.attempts, rng), type(exc).__name__)
