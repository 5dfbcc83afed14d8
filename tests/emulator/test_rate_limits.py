"""Per-key, per-endpoint one-second rate limits, their headers, and the max_window statistic."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from airflow_provider_attentive.emulator import Emulator, max_window
from airflow_provider_attentive.emulator.limits import EndpointRateLimit, WindowTracker
from tests.helpers.emulator import PHONE, error_message


def test_twelve_fast_subscribes_give_ten_accepted_and_two_429(api: httpx.Client, attentive_emulator: Emulator) -> None:
    started = time.monotonic()
    responses = [
        api.post("/subscriptions", json={"user": {"phone": f"+1415555{i:04d}"}, "signUpSourceId": "1"})
        for i in range(12)
    ]
    assert time.monotonic() - started < 1.0, "requests were too slow for the test to mean anything"
    assert [r.status_code for r in responses] == [202] * 10 + [429] * 2
    assert [r.headers["x-ratelimit-limit"] for r in responses] == ["10"] * 12
    assert [int(r.headers["x-ratelimit-remaining"]) for r in responses] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0]
    assert "rate limit" in error_message(responses[-1])

    stats = attentive_emulator.client.stats()["endpoints"]["subscribe"]
    assert stats["requests"] == 12
    assert stats["status"] == {"202": 10, "429": 2}
    assert stats["rate_limited"] == 2
    assert stats["max_window"] == 10
    assert stats["max_window_all"] == 12
    # 429s were not applied.
    assert len(attentive_emulator.client.subscriptions()) == 10


def test_window_slides_and_limits_are_per_key_and_endpoint(api: httpx.Client, attentive_emulator: Emulator) -> None:
    client = attentive_emulator.client
    client.set_limits({"unsubscribe": 2})
    client.add_key("second-key-42")
    body = {"user": {"phone": PHONE}}
    assert [api.post("/subscriptions/unsubscribe", json=body).status_code for _ in range(3)] == [202, 202, 429]
    # Another key has its own bucket; another endpoint too.
    other = api.post("/subscriptions/unsubscribe", json=body, headers={"Authorization": "Bearer second-key-42"})
    assert other.status_code == 202
    assert api.get("/me").status_code == 200
    time.sleep(1.05)
    again = api.post("/subscriptions/unsubscribe", json=body)
    assert again.status_code == 202
    assert again.headers["x-ratelimit-remaining"] == "1"


def test_every_answer_carries_rate_limit_headers(api: httpx.Client, attentive_emulator: Emulator) -> None:
    responses = [
        api.post("/attributes/custom", json={"properties": {}}),  # 400
        api.get("/me"),
        api.get("/nope"),  # 404
        httpx.get(f"{attentive_emulator.url}/v1/me"),  # 401
        httpx.post(
            f"{attentive_emulator.url}/v1/events/custom", json={}, headers={"Authorization": "Bearer readonly-key"}
        ),  # 403
    ]
    for response in responses:
        assert response.headers["x-ratelimit-limit"].isdigit(), response
        assert response.headers["x-ratelimit-remaining"].isdigit(), response


def test_limit_control_validation(attentive_emulator: Emulator) -> None:
    from airflow_provider_attentive.emulator import EmulatorError

    with pytest.raises(EmulatorError, match="unknown endpoint"):
        attentive_emulator.client.set_limits({"nope": 1})
    limits = attentive_emulator.client.set_limits({"*": 1000})
    assert set(limits.values()) == {1000}


def test_max_window_on_a_known_sequence() -> None:
    times = [0.0, 0.1, 0.5, 0.99, 1.0, 1.05, 2.5]
    # (0.05, 1.05] holds 0.1, 0.5, 0.99, 1.0, 1.05; 0.0 and 1.0 are exactly one second apart.
    assert max_window(times) == 5
    assert max_window([]) == 0
    assert max_window([3.0]) == 1
    assert max_window([0.0, 1.0, 2.0, 3.0]) == 1
    assert max_window([0.0, 0.999, 1.998]) == 2
    assert max_window([1.0, 1.0, 1.0]) == 3
    assert max_window([0.0, 0.5, 1.0, 1.5], window=2.0) == 4


def test_max_window_matches_brute_force_and_incremental_tracker() -> None:
    rng = random.Random(7)
    for _ in range(200):
        times = sorted(rng.uniform(0, 5) for _ in range(rng.randrange(0, 60)))
        brute = max((sum(1 for s in times if s <= t and t - s < 1.0) for t in times), default=0)
        tracker = WindowTracker()
        for t in times:
            tracker.add(t)
        assert max_window(times) == brute == tracker.max


def test_rate_limiter_never_admits_more_than_the_limit_per_window() -> None:
    rng = random.Random(3)
    limiter = EndpointRateLimit({"subscribe": 10})
    now = 0.0
    accepted = []
    for _ in range(2000):
        now += rng.expovariate(40)
        ok, remaining = limiter.acquire("k", "subscribe", now)
        assert 0 <= remaining <= 9
        if ok:
            accepted.append(now)
    assert max_window(accepted) == 10
    assert len(accepted) < 2000
