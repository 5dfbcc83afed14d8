"""The shared (cross-process) rate budget: Redis and SQL backends, wiring through the connection extras.

Redis tests start a throwaway ``redis-server`` (Debian package; skipped when it is absent unless
``ATTENTIVE_REQUIRE_REDIS`` is set). Several limiters in one test stand for several processes: each has its
own Redis client and client id, so they coordinate only through Redis, exactly as separate workers would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.get_provider_info import CONN_FIELDS
from airflow_provider_attentive.hooks import shared_limit
from airflow_provider_attentive.hooks.attentive import AttentiveHook, config_from_connection
from airflow_provider_attentive.hooks.ratelimit import LocalRateLimiter, RateLimiter
from airflow_provider_attentive.hooks.shared_limit import (
    RateLimitBackendUnavailable,
    RedisRateLimiter,
    SqlRateLimiter,
    budget_fingerprint,
    redact_url,
)
from airflow_provider_attentive.hooks.transport import AttentiveTransport, Request, TransportConfig
from tests.hooks.conftest import StubServer
from tests.hooks.test_ratelimit import max_in_window
from tests.scale.redis_server import RedisServer, require_redis_server

if os.environ.get("ATTENTIVE_REQUIRE_REDIS"):
    import redis
else:
    redis = pytest.importorskip("redis")

BASE = "https://api.example"
KEY = "sk_live_shared_budget_7f3a9c"


@pytest.fixture(scope="module")
def _redis_module() -> Iterator[RedisServer]:
    server = require_redis_server()
    yield server
    server.close()


@pytest.fixture
def redis_server(_redis_module: RedisServer) -> Iterator[RedisServer]:
    """The module's server, emptied for this test (restarted if a test stopped it)."""
    if _redis_module.process is None:
        _redis_module.start()
    client = redis.Redis.from_url(_redis_module.url)
    client.flushall()
    client.close()
    yield _redis_module


def make(url: str, rates: dict[str, float], **kwargs: Any) -> RedisRateLimiter:
    return RedisRateLimiter(url, base_url=BASE, api_key=KEY, rates=rates, **kwargs)


def run_limiters(
    limiters: list[Any],
    endpoint: str,
    per_limiter: int,
    *,
    concurrency: int = 16,
    during: Callable[[], None] | None = None,
) -> list[float]:
    """Each limiter in its own thread and event loop (like a worker process): acquire ``per_limiter`` times.

    Returns the start times (monotonic) of every request, all limiters together.
    """
    starts: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(limiter: Any) -> None:
        async def one(gate: asyncio.Semaphore) -> None:
            async with gate:
                permit = await limiter.acquire(endpoint)
                with lock:
                    starts.append(time.monotonic())
                if permit is not None:
                    permit.sent()

        async def main() -> None:
            gate = asyncio.Semaphore(concurrency)
            await asyncio.gather(*(one(gate) for _ in range(per_limiter)))
            await limiter.aclose()

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters]
    for t in threads:
        t.start()
    if during is not None:
        during()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return sorted(starts)


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


# -- SQL backend ----------------------------------------------------------------------------------------


def sqlite_limiter(path: Path, rates: dict[str, float], **kwargs: Any) -> SqlRateLimiter:
    return SqlRateLimiter(
        lambda: sqlite3.connect(path, timeout=5), base_url=BASE, api_key=KEY, rates=rates, placeholder="?", **kwargs
    )


def test_two_sql_limiters_never_exceed_the_limit(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    limiters = [sqlite_limiter(db, {"subscribe": 10}) for _ in range(2)]
    try:
        starts = run_limiters(limiters, "subscribe", 12)
        assert limiters[0].peers >= 1 and limiters[1].peers == 2
    finally:
        for limiter in limiters:
            limiter.close()
    assert max_in_window(starts) <= 10
    rows = sqlite3.connect(db).execute("SELECT bucket FROM attentive_rate_limit").fetchall()
    assert rows == [(f"{budget_fingerprint(BASE, KEY)}:subscribe",)]  # heartbeats removed on close
    assert KEY not in repr(rows)


def test_a_sql_slot_missed_before_sending_is_replaced(tmp_path: Path) -> None:
    limiter = sqlite_limiter(tmp_path / "state.db", {"subscribe": 10})

    async def main() -> tuple[float, float, float]:
        permit = await limiter.acquire("subscribe")
        assert isinstance(permit, shared_limit._SqlPermit)
        first = permit.slot
        await permit.before_send()  # on time: keeps its slot
        assert permit.slot == first
        permit.slot -= 0.2  # as if the request were about to go out 200 ms after its slot
        await permit.before_send()
        return first, permit.slot, time.time()

    try:
        first, replaced, now = asyncio.run(main())
    finally:
        limiter.close()
    assert replaced > first
    assert abs(now - replaced) <= 0.025 + 0.01  # on time for the new slot


def test_the_transport_lets_a_permit_check_just_before_writing(stub_server: StubServer) -> None:
    events: list[str] = []

    class Permit:
        async def before_send(self) -> None:
            events.append("before_send")

        def sent(self) -> None:
            events.append("sent")

    class Limiter:
        async def acquire(self, endpoint_name: str) -> Permit:
            events.append("acquire")
            return Permit()

        def note_remaining(self, endpoint_name: str, remaining: int, limit: int | None) -> None:
            pass

        def note_throttled(self, endpoint_name: str, retry_after_s: float | None) -> None:
            pass

    with AttentiveTransport(TransportConfig(stub_server.url, KEY), limiter=Limiter()) as transport:
        assert transport.request("attributes", attrs(1)).ok
    assert events == ["acquire", "before_send", "sent"]


@pytest.mark.postgres
def test_sql_limiter_on_postgres(pg_database: dict[str, Any]) -> None:
    from tests.postgres import pg_connect

    limiters = [
        SqlRateLimiter(
            lambda: pg_connect(pg_database), base_url=BASE, api_key=KEY, rates={"unsubscribe": 5}, placeholder="%s"
        )
        for _ in range(2)
    ]
    try:
        starts = run_limiters(limiters, "unsubscribe", 6)
    finally:
        for limiter in limiters:
            limiter.close()
    assert max_in_window(starts) <= 5


def test_unreachable_sql_backend_at_start_is_a_clear_error() -> None:
    def connect() -> Any:
        raise OSError("could not connect to server: Connection refused")

    with pytest.raises(RateLimitBackendUnavailable, match=r"rate_limit_backend 'sql'.*Connection refused"):
        SqlRateLimiter(connect, base_url=BASE, api_key=KEY, rates={"subscribe": 10}, description="connection 'x'")


# -- configuration: extras, transport, form --------------------------------------------------------------


COMPOSE_EXTRA = {
    "allow_insecure_http": True,
    "rate_limit_backend": "redis",
    "rate_limit_redis_url": "redis://redis:6379/2",
    "timeout": 30,
}


def test_the_docker_compose_connection_extras_are_understood() -> None:
    config = config_from_connection("c", "http://attentive-emulator:8765", 8765, "compose-demo-key", COMPOSE_EXTRA)
    assert config.base_url == "http://attentive-emulator:8765"
    assert config.rate_limit_backend == "redis"
    assert config.rate_limit_redis_url == "redis://redis:6379/2"
    assert config.allow_insecure_http is True
    assert "redis://" not in repr(config)  # the URL may carry a password


def test_plain_http_to_a_remote_host_needs_allow_insecure_http(caplog: pytest.LogCaptureFixture) -> None:
    extra = {k: v for k, v in COMPOSE_EXTRA.items() if k != "allow_insecure_http"}
    with pytest.raises(ValueError, match="allow_insecure_http"):
        config_from_connection("c", "http://attentive-emulator:8765", None, "k", extra)
    with pytest.raises(ValueError, match="allow_insecure_http"):
        config_from_connection(
            "c", "http://attentive-emulator:8765", None, "k", {**extra, "allow_insecure_http": "false"}
        )
    config_from_connection("c", "http://attentive-emulator:8765", None, "k", {**extra, "allow_insecure_http": "true"})
    assert any("never for the real API" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rate_limit_backend": "memcached"}, "must be one of local, redis, sql"),
        ({"rate_limit_backend": "redis"}, "needs rate_limit_redis_url"),
        ({"rate_limit_backend": "sql"}, "needs the extra 'rate_limit_sql_conn_id'"),
        ({"rate_limit_share": 1.5}, r"fraction in \(0, 1\]"),
        ({"rate_limit_share": 0}, "greater than 0"),
        ({"allow_insecure_http": "maybe"}, "true or false"),
        ({"rate_limit_redis_url": 5}, "must be a string"),
    ],
)
def test_bad_rate_limit_extras_name_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        config_from_connection("my_conn", None, None, "k", extra)
    assert "'my_conn'" in str(info.value)


def test_local_backend_with_a_share_scales_every_limit() -> None:
    config = config_from_connection("c", None, None, "k", {"rate_limit_share": "0.25", "rate_limit_subscribe": 8})
    assert config.rate_limit_backend == "local"
    with AttentiveTransport(config) as transport:
        limiter = transport.limiter
        assert isinstance(limiter, LocalRateLimiter)
        assert limiter.limiter("attributes").rate == 37.5
        assert limiter.limiter("subscribe").rate == 2.0


def test_sql_backend_needs_a_limiter_outside_the_hook() -> None:
    config = TransportConfig(BASE, KEY, rate_limit_backend="sql")
    with pytest.raises(ValueError, match="rate_limit_sql_conn_id"):
        AttentiveTransport(config)


def test_connection_form_declares_the_new_extras() -> None:
    for name in ("rate_limit_backend", "rate_limit_redis_url", "rate_limit_sql_conn_id", "rate_limit_share"):
        assert "null" in CONN_FIELDS[name]["schema"]["type"]
    assert CONN_FIELDS["rate_limit_backend"]["schema"]["enum"] == ["local", "redis", "sql", None]
    assert CONN_FIELDS["allow_insecure_http"]["schema"]["type"] == ["boolean", "null"]


def test_redact_url() -> None:
    assert redact_url("redis://:pw@redis:6379/2") == "redis://:***@redis:6379/2"
    assert redact_url("redis://user:pw@[::1]:6379/0") == "redis://user:***@[::1]:6379/0"
    assert redact_url("redis://redis:6379/2") == "redis://redis:6379/2"


# -- the hook ---------------------------------------------------------------------------------------------


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_hook_test_connection_reports_an_unreachable_redis(
    monkeypatch: pytest.MonkeyPatch, closed_port_url: str
) -> None:
    port = closed_port_url.rsplit(":", 1)[1]
    extra = {"rate_limit_backend": "redis", "rate_limit_redis_url": f"redis://:pw-77x@127.0.0.1:{port}/2"}
    set_conn(
        monkeypatch, "attentive_default", conn_type="attentive", host="http://127.0.0.1:1", password=KEY, extra=extra
    )
    ok, message = AttentiveHook().test_connection()
    assert not ok
    assert "cannot reach Redis" in message and "pw-77x" not in message


def test_hook_with_the_redis_backend_sends_through_the_shared_budget(
    monkeypatch: pytest.MonkeyPatch, attentive_emulator: Emulator, redis_server: RedisServer
) -> None:
    extra = {"rate_limit_backend": "redis", "rate_limit_redis_url": redis_server.url}
    set_conn(
        monkeypatch,
        "attentive_default",
        conn_type="attentive",
        host=attentive_emulator.url,
        password="test-key",
        extra=extra,
    )
    hook = AttentiveHook()
    try:
        assert hook.test_connection()[0]
        assert hook.post_custom_attributes(attrs(1)).ok
        assert isinstance(hook.get_conn().limiter, RedisRateLimiter)
    finally:
        hook.close()


def test_hook_with_the_sql_backend(
    monkeypatch: pytest.MonkeyPatch, attentive_emulator: Emulator, tmp_path: Path
) -> None:
    db = tmp_path / "limits.db"
    set_conn(monkeypatch, "limits_db", conn_type="sqlite", host=str(db))
    extra = {"rate_limit_backend": "sql", "rate_limit_sql_conn_id": "limits_db"}
    set_conn(
        monkeypatch,
        "attentive_default",
        conn_type="attentive",
        host=attentive_emulator.url,
        password="test-key",
        extra=extra,
    )
    hook = AttentiveHook()
    try:
        assert hook.subscribe({"user": {"phone": "+14155550199"}, "signUpSourceId": "12345"}).status is not None
        assert isinstance(hook.get_conn().limiter, SqlRateLimiter)
    finally:
        hook.close()
    rows = sqlite3.connect(db).execute("SELECT bucket FROM attentive_rate_limit").fetchall()
    assert [r[0].split(":", 1)[1] for r in rows] == ["subscribe"]


def test_hook_with_the_sql_backend_and_a_missing_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"rate_limit_backend": "sql", "rate_limit_sql_conn_id": "nope_not_there"}
    set_conn(
        monkeypatch, "attentive_default", conn_type="attentive", host="http://127.0.0.1:1", password=KEY, extra=extra
    )
    hook = AttentiveHook()
    with pytest.raises(ValueError, match="rate_limit_sql_conn_id 'nope_not_there'"):
        hook.get_conn()


def test_module_is_airflow_free() -> None:
    code = (
        "import sys, airflow_provider_attentive.hooks.shared_limit, airflow_provider_attentive.hooks.transport; "
        "bad = [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
