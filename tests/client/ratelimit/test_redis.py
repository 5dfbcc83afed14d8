"""The shared rate budget in Redis: windows across limiters, failures and outages, what is stored.

The tests start a throwaway ``redis-server`` (Debian package; skipped when it is absent unless
``ATTENTIVE_REQUIRE_REDIS`` is set). Several limiters in one test stand for several processes: each has its
own Redis client and client id, so they coordinate only through Redis, exactly as separate workers would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from typing import Any

import pytest

from airflow_provider_attentive.client import AttentiveTransport, Request, TransportConfig
from airflow_provider_attentive.client.ratelimit.base import RateLimiter
from airflow_provider_attentive.client.ratelimit.redis import RedisRateLimiter
from airflow_provider_attentive.client.ratelimit.shared import RateLimitBackendUnavailable, budget_fingerprint
from airflow_provider_attentive.emulator import Emulator
from tests.helpers.limits import max_in_window, run_limiters
from tests.helpers.redis import RedisServer

if os.environ.get("ATTENTIVE_REQUIRE_REDIS"):
    import redis
else:
    redis = pytest.importorskip("redis")

BASE = "https://api.example"
KEY = "sk_live_shared_budget_7f3a9c"


def make(url: str, rates: dict[str, float], **kwargs: Any) -> RedisRateLimiter:
    return RedisRateLimiter(url, base_url=BASE, api_key=KEY, rates=rates, **kwargs)


# -- Redis: the window holds across limiters -------------------------------------------------------------


@pytest.mark.parametrize(("rate", "per_limiter"), [(40, 60), (5, 6)])
def test_two_limiters_on_one_redis_never_exceed_the_limit_in_any_second(
    redis_server: RedisServer, rate: int, per_limiter: int
) -> None:
    limiters = [make(redis_server.url, {"attributes": rate}) for _ in range(2)]
    try:
        starts = run_limiters(limiters, "attributes", per_limiter)
    finally:
        for limiter in limiters:
            limiter.close()
    assert len(starts) == 2 * per_limiter
    assert max_in_window(starts) <= rate
    # Evenly spaced rather than in bursts (how much of the budget they use together is a benchmark:
    # benchmarks/parallel_syncs.py; the plan itself wastes nothing, see the bookings test below).
    gaps = sorted(b - a for a, b in itertools.pairwise(starts))
    assert gaps[len(gaps) // 2] >= 0.7 / rate


def test_bookings_are_evenly_spaced_and_windowed_in_redis_time(redis_server: RedisServer) -> None:
    """A burst of bookings from two limiters, read back from Redis: the plan itself obeys the window."""
    a = make(redis_server.url, {"attributes": 50})
    b = make(redis_server.url, {"attributes": 50})

    async def book(limiter: RedisRateLimiter, n: int) -> None:
        _, scripts = limiter._client()
        shape = limiter._shapes["attributes"]
        keys = limiter._keys["attributes"]
        for i in range(n):
            await scripts["reserve"](
                keys=[*keys, limiter._clients_key],
                args=[f"{limiter._client_id}:{i}", limiter._client_id, shape.capacity, 1_000_000, 20_000, 20_000,
                      600_000_000, 60_000],
            )  # fmt: skip
        await limiter.aclose()

    async def main() -> None:
        await asyncio.gather(book(a, 120), book(b, 120))

    asyncio.run(main())
    client = redis.Redis.from_url(redis_server.url)
    slots = [score / 1e6 for _, score in client.zrange(a._keys["attributes"][0], 0, -1, withscores=True)]
    client.close()
    a.close()
    b.close()
    assert len(slots) == 240
    gaps = [y - x for x, y in itertools.pairwise(slots)]
    assert min(gaps) >= 0.02 - 1e-6  # spacing
    assert max_in_window(slots, 1.02 - 1e-6) <= 50  # at most 50 in any window plus margin
    assert (slots[-1] - slots[0]) < 240 / 50 * 1.05  # and nothing wasted beyond the margin


def test_a_start_is_rechecked_against_what_other_processes_really_sent(redis_server: RedisServer) -> None:
    a = make(redis_server.url, {"subscribe": 1})
    b = make(redis_server.url, {"subscribe": 1})

    async def main() -> None:
        _, sa = a._client()
        _, sb = b._client()
        keys = a._keys["subscribe"]
        args = [1, 1_000_000, 20_000, 60_000]
        assert await sa["start"](keys=keys, args=["a:1", *args]) == 0
        wait = await sb["start"](keys=keys, args=["b:1", *args])  # the window is full
        assert 0.95 <= wait / 1e6 <= 1.02 + 1e-6
        await a._mark("subscribe", "a:1", 0.1)  # a's bytes really left 100 ms after its start
        wait = await sb["start"](keys=keys, args=["b:1", *args])
        assert 1.05 <= wait / 1e6 <= 1.12 + 1e-6
        await a.aclose()
        await b.aclose()

    asyncio.run(main())
    a.close()
    b.close()


def test_a_429_widens_the_margin_for_every_process_and_retry_after_holds_them(redis_server: RedisServer) -> None:
    a = make(redis_server.url, {"attributes": 150})
    b = make(redis_server.url, {"attributes": 150})

    async def main() -> float:
        await a._shared_throttled("attributes", 0.5)
        _, scripts = b._client()
        shape = b._shapes["attributes"]
        delay, _, margin = await scripts["reserve"](
            keys=[*b._keys["attributes"], b._clients_key],
            args=[
                "b:1",
                b._client_id,
                shape.capacity,
                1_000_000,
                int(shape.spacing_s * 1e6),
                20_000,
                600_000_000,
                1000,
            ],
        )
        await a.aclose()
        await b.aclose()
        assert margin == 30_000  # 20 ms + one step, seen by the other limiter
        return delay / 1e6

    assert 0.4 <= asyncio.run(main()) <= 0.5
    a.close()
    b.close()


# -- Redis: failures ------------------------------------------------------------------------------------


def test_unreachable_redis_at_start_is_a_clear_error_without_the_password(closed_port_url: str) -> None:
    port = closed_port_url.rsplit(":", 1)[1]
    url = f"redis://:hunter2secret@127.0.0.1:{port}/2"
    with pytest.raises(RateLimitBackendUnavailable) as info:
        make(url, {"attributes": 150}, timeout_s=0.5)
    message = str(info.value)
    assert "rate_limit_backend 'redis'" in message and f"127.0.0.1:{port}" in message
    assert "rate_limit_redis_url" in message and "'local'" in message
    assert "hunter2secret" not in message and "***" in message


def test_transport_with_unreachable_redis_fails_before_sending(closed_port_url: str) -> None:
    port = closed_port_url.rsplit(":", 1)[1]
    config = TransportConfig(
        "http://127.0.0.1:1", KEY, rate_limit_backend="redis", rate_limit_redis_url=f"redis://127.0.0.1:{port}/0"
    )
    with pytest.raises(RateLimitBackendUnavailable, match="cannot reach Redis"):
        AttentiveTransport(config)


def test_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ValueError, match=r"pip install 'airflow-provider-attentive\[redis\]'"):
        make("redis://127.0.0.1:6379/0", {"attributes": 150})


def test_an_outage_while_running_falls_back_to_a_share_and_never_exceeds_the_limit(redis_server: RedisServer) -> None:
    rate = 20
    limiters = [make(redis_server.url, {"attributes": rate}, timeout_s=0.5) for _ in range(2)]
    assert limiters[1].peers == 2
    seen: dict[str, Any] = {}

    def outage() -> None:
        time.sleep(1.0)
        redis_server.stop()
        seen["down_at"] = time.monotonic()
        time.sleep(2.0)
        seen["degraded"] = [lim.degraded for lim in limiters]
        redis_server.start()
        seen["up_at"] = time.monotonic()

    try:
        starts = run_limiters(limiters, "attributes", 50, during=outage)
    finally:
        for limiter in limiters:
            limiter.close()
    assert seen["degraded"] == [True, True]
    assert [lim.outages for lim in limiters] == [1, 1]
    assert not any(lim.degraded for lim in limiters)
    assert max_in_window(starts) <= rate
    # Requests kept flowing during the outage, at the fallback share (1/2 each) after a one-window hold.
    during = [t for t in starts if seen["down_at"] + 1.1 <= t <= seen["up_at"]]
    assert len(during) >= 5


def test_the_api_key_is_never_stored_in_redis(attentive_emulator: Emulator, redis_server: RedisServer) -> None:
    config = TransportConfig(
        attentive_emulator.url, "test-key", rate_limit_backend="redis", rate_limit_redis_url=redis_server.url
    )
    with AttentiveTransport(config) as transport:
        assert isinstance(transport.limiter, RedisRateLimiter)
        assert isinstance(transport.limiter, RateLimiter)
        results = list(transport.send_many("attributes", (Request(i, attrs(i)) for i in range(20))))
        transport.limiter.note_throttled("attributes", 0.01)
        transport.limiter.note_remaining("attributes", 0, 150)
        time.sleep(0.2)
        assert all(r.ok for r in results)
        fingerprint = transport.limiter.fingerprint
        clients_key = transport.limiter._clients_key
        dump = dump_redis(redis_server.url)
    assert fingerprint == budget_fingerprint(config.base_url, "test-key")
    assert fingerprint in dump and clients_key in dump
    assert "test-key" not in dump
    # Closing the transport closed the limiter: it left the list of peers.
    client = redis.Redis.from_url(redis_server.url)
    assert client.zcard(clients_key) == 0
    client.close()


def attrs(i: int) -> dict[str, Any]:
    return {"user": {"phone": f"+1415{3000000 + i:07d}"}, "properties": {"tier": "gold"}}


def dump_redis(url: str) -> str:
    """Every key name and value in Redis, as text."""
    client = redis.Redis.from_url(url, decode_responses=True)
    parts = []
    for key in client.scan_iter("*"):
        kind = client.type(key)
        parts.append(key)
        if kind == "zset":
            parts.append(json.dumps(client.zrange(key, 0, -1, withscores=True)))
        elif kind == "hash":
            parts.append(json.dumps(client.hgetall(key)))
        elif kind == "string":
            parts.append(str(client.get(key)))
        else:
            parts.append(f"<{kind}>")
    client.close()
    return "\n".join(parts)
