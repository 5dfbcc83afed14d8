"""Retry classification, backoff and Retry-After parsing, without a server."""

from __future__ import annotations

import random
from email.utils import formatdate

import httpx
import pytest

from airflow_provider_attentive.client.models import RequestOutcome
from airflow_provider_attentive.client.retry import (
    RetryPolicy,
    RetryState,
    may_have_been_sent,
    parse_retry_after,
)

REQUEST = httpx.Request("POST", "https://api.example/v1/subscriptions")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), ("0", 0.0), (" 1.5 ", 1.5), ("-3", 0.0), ("soon", None), ("", None), (None, None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 7, usegmt=True), now=now) == pytest.approx(7.0)
    assert parse_retry_after(formatdate(now - 7, usegmt=True), now=now) == 0.0


def test_success_counts_one_attempt() -> None:
    state = RetryState()
    decision = RetryPolicy().after_status(state, 200)
    assert decision.outcome is RequestOutcome.OK
    assert state.attempts == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_4xx_are_permanent(status: int) -> None:
    state = RetryState()
    decision = RetryPolicy().after_status(state, status)
    assert decision.outcome is RequestOutcome.REJECTED
    assert state.attempts == 1


def test_429_waits_retry_after_and_is_not_an_attempt() -> None:
    state = RetryState()
    policy = RetryPolicy(max_attempts=1)
    for _ in range(5):
        decision = policy.after_status(state, 429, "3", random.Random(1))
        assert decision.retry
        assert 3.0 <= decision.delay_s <= 3.1
    assert state.attempts == 0
    assert state.throttled == 5
    assert policy.after_status(state, 200).outcome is RequestOutcome.OK
    assert state.attempts == 1


def test_429_without_retry_after_waits_about_a_second() -> None:
    rng = random.Random(7)
    delays = [RetryPolicy().after_status(RetryState(), 429, None, rng).delay_s for _ in range(200)]
    assert all(1.0 <= d <= 1.5 for d in delays)
    assert max(delays) - min(delays) > 0.3  # jittered, not a fixed second


def test_throttling_is_capped_in_total_time() -> None:
    state = RetryState()
    policy = RetryPolicy(max_throttle_s=10)
    decisions = [policy.after_status(state, 429, "4") for _ in range(3)]
    assert [d.retry for d in decisions] == [True, True, False]
    assert decisions[-1].outcome is RequestOutcome.FAILED
    assert "rate limited" in decisions[-1].reason


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_5xx_and_408_retry_until_max_attempts(status: int) -> None:
    state = RetryState()
    policy = RetryPolicy(max_attempts=4)
    decisions = [policy.after_status(state, status) for _ in range(4)]
    assert [d.retry for d in decisions] == [True, True, True, False]
    assert decisions[-1].outcome is RequestOutcome.FAILED
    assert state.attempts == 4


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=4.0)
    rng = random.Random(3)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        samples = [policy.backoff_s(failures, rng) for _ in range(500)]
        assert all(0.0 <= s <= ceiling for s in samples)
        # Full jitter: the whole range [0, ceiling] is used, not just its upper half.
        assert min(samples) < 0.1 * ceiling
        assert max(samples) > 0.9 * ceiling


def test_503_retry_after_is_honoured_within_the_backoff_cap() -> None:
    policy = RetryPolicy(backoff_base_s=0.01, backoff_max_s=5)
    decision = policy.after_status(RetryState(), 503, "2", random.Random(0))
    assert decision.retry
    assert decision.delay_s >= 2.0


NOT_SENT = [httpx.ConnectError("refused", request=REQUEST), httpx.ConnectTimeout("slow", request=REQUEST)]
MAYBE_SENT = [
    httpx.ReadTimeout("timed out", request=REQUEST),
    httpx.ReadError("connection reset by peer", request=REQUEST),
    httpx.WriteError("broken pipe", request=REQUEST),
    httpx.RemoteProtocolError("Server disconnected without sending a response.", request=REQUEST),
]


@pytest.mark.parametrize("exc", NOT_SENT + MAYBE_SENT, ids=lambda e: type(e).__name__)
def test_network_errors_are_retried_on_idempotent_endpoints(exc: Exception) -> None:
    state = RetryState()
    policy = RetryPolicy(max_attempts=3)
    decisions = [policy.after_error(state, exc, idempotent=True) for _ in range(3)]
    assert [d.retry for d in decisions] == [True, True, False]
    assert decisions[-1].outcome is RequestOutcome.FAILED


@pytest.mark.parametrize("exc", MAYBE_SENT, ids=lambda e: type(e).__name__)
def test_maybe_sent_errors_are_in_doubt_on_non_idempotent_endpoints(exc: Exception) -> None:
    assert may_have_been_sent(exc)
    state = RetryState()
    decision = RetryPolicy().after_error(state, exc, idempotent=False)
    assert decision.outcome is RequestOutcome.IN_DOUBT
    assert state.attempts == 1


@pytest.mark.parametrize("exc", NOT_SENT, ids=lambda e: type(e).__name__)
def test_connect_errors_are_retried_even_on_non_idempotent_endpoints(exc: Exception) -> None:
    assert not may_have_been_sent(exc)
    assert RetryPolicy().after_error(RetryState(), exc, idempotent=False).retry


def test_non_idempotent_endpoints_still_retry_429_and_5xx() -> None:
    # after_status does not depend on idempotency: an HTTP answer means Attentive did not apply a
    # 429 and reported its own failure on a 5xx.
    policy = RetryPolicy()
    assert policy.after_status(RetryState(), 429).retry
    assert policy.after_status(RetryState(), 503).retry


def test_local_errors_are_not_retried() -> None:
    exc = httpx.LocalProtocolError("Illegal header value")
    decision = RetryPolicy().after_error(RetryState(), exc, idempotent=True)
    assert decision.outcome is RequestOutcome.FAILED


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
