"""AttentiveTransport against the emulator (real HTTP on loopback); no Airflow involved."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import pytest

from airflow_provider_attentive.client import (
    AttentiveTransport,
    EndpointName,
    LimiterRegistry,
    Request,
    RequestOutcome,
    Result,
    TransportConfig,
)
from airflow_provider_attentive.emulator import Emulator, EmulatorProcess
from tests.helpers.stub_server import StubReply, StubServer

KEY = "test-key"


def attrs(i: int) -> dict[str, Any]:
    return {"user": {"phone": f"+1415555{i:04d}"}, "properties": {"row": str(i)}}


def sub(i: int) -> dict[str, Any]:
    return {"user": {"phone": f"+1628555{i:04d}"}, "signUpSourceId": "12345"}


def unsub(i: int) -> dict[str, Any]:
    return {
        "user": {"phone": f"+1628555{i:04d}"},
        "subscriptions": [{"type": "MARKETING", "channel": "TEXT"}],
        "notification": {"disabled": True},
    }


def make(url: str, key: str = KEY, **kwargs: Any) -> AttentiveTransport:
    """A transport with its own limiter registry, so tests never share windows by accident."""
    return AttentiveTransport(TransportConfig(url, key, **kwargs), registry=LimiterRegistry())


def endpoint_stats(emu: Emulator | EmulatorProcess, name: str) -> dict[str, Any]:
    return emu.client.stats()["endpoints"][name]


# -- single requests ---------------------------------------------------------------------------


def test_me_and_request_headers(stub_server: StubServer) -> None:
    stub_server.script(StubReply(200, {"companyName": "Stub Co"}))
    with make(stub_server.url + "/v1", key="sk_stub_1") as transport:
        result = transport.request("me")
        transport.request("attributes", attrs(1))
    assert result.ok and result.status == 200 and result.body == {"companyName": "Stub Co"}
    assert result.attempts == 1 and result.throttled == 0 and result.error is None
    get, post = stub_server.requests
    assert (get.method, get.path) == ("GET", "/v1/me")
    assert (post.method, post.path) == ("POST", "/v1/attributes/custom")
    assert post.headers["Authorization"] == "Bearer sk_stub_1"
    assert post.headers["User-Agent"].startswith("airflow-provider-attentive/")
    assert post.headers["Accept"] == "application/json"
    assert post.headers["Content-Type"] == "application/json"
    assert post.body == b'{"user":{"phone":"+14155550001"},"properties":{"row":"1"}}'


def test_every_endpoint_against_the_emulator(attentive_emulator: Emulator) -> None:
    with make(attentive_emulator.url) as transport:
        me = transport.request("me")
        assert me.ok and me.body["companyName"] == "Emulated Co"
        assert transport.request("attributes", attrs(1)).ok
        event = {"type": "Order Shipped", "externalEventId": "e-1", "user": {"phone": "+14155550001"}}
        assert transport.request("events", event).ok
        subscribed = transport.request("subscribe", sub(1))
        assert subscribed.outcome is RequestOutcome.OK and subscribed.status == 202
        read = transport.request("subscriptions_read", params={"phone": "+16285550001"})
        assert read.ok and "subscriptionEligibilities" in read.body
        assert transport.request("unsubscribe", unsub(1)).ok
        assert transport.request("identity", {"phone": "+14155550001", "clientUserId": "u-1"}).ok
    with pytest.raises(KeyError, match="unknown Attentive endpoint"):
        transport.request("nope")


def test_endpoints_are_named_by_member_or_value(attentive_emulator: Emulator) -> None:
    with make(attentive_emulator.url) as transport:
        by_member = transport.request(EndpointName.ME)
        by_value = transport.request("me")
        (sent,) = transport.send_many(EndpointName.ATTRIBUTES, [Request(1, attrs(1))])
    assert by_member.ok and by_value.ok and sent.ok
    assert by_member.endpoint is by_value.endpoint is EndpointName.ME
    assert sent.endpoint is EndpointName.ATTRIBUTES and str(sent.endpoint) == "attributes"


def test_non_json_and_empty_2xx_bodies_are_successes(stub_server: StubServer) -> None:
    stub_server.script(StubReply(200, "OK"), StubReply(200, b""))
    with make(stub_server.url) as transport:
        text = transport.request("attributes", attrs(1))
        empty = transport.request("attributes", attrs(2))
    assert text.ok and text.body == "OK"
    assert empty.ok and empty.body is None


def test_400_is_returned_at_once_with_attentives_message(attentive_emulator: Emulator) -> None:
    bad = {"user": {"phone": "+14155550001"}, "properties": {"colours": ["red", "blue"]}}
    with make(attentive_emulator.url) as transport:
        result = transport.request("attributes", bad)
    assert result.outcome is RequestOutcome.REJECTED
    assert result.status == 400 and result.attempts == 1
    assert "POST /v1/attributes/custom answered HTTP 400" in result.error
    message = result.body["error"]["message"]
    assert message and message in result.error
    assert endpoint_stats(attentive_emulator, "attributes")["requests"] == 1


def test_401_and_403_are_permanent(attentive_emulator: Emulator) -> None:
    with make(attentive_emulator.url, key="wrong-key") as transport:
        unauthorised = transport.request("me")
    with make(attentive_emulator.url, key="readonly-key") as transport:
        forbidden = transport.request("attributes", attrs(1))
    assert (unauthorised.outcome, unauthorised.status, unauthorised.attempts) == (RequestOutcome.REJECTED, 401, 1)
    assert (forbidden.outcome, forbidden.status, forbidden.attempts) == (RequestOutcome.REJECTED, 403, 1)
    assert "attributes:write" in forbidden.error


def test_connection_refused_is_retried_then_failed(closed_port_url: str) -> None:
    with make(closed_port_url, max_attempts=3, backoff_base=0.01) as transport:
        result = transport.request("attributes", attrs(1))
        stats = transport.stats.snapshot()
    assert result.outcome is RequestOutcome.FAILED and result.status is None
    assert result.attempts == 3
    assert "ConnectError" in result.error and "gave up after 3 attempts" in result.error
    assert stats["retries"] == 2 and stats["network_errors"] == 3 and stats["failed"] == 1


def test_non_idempotent_requests_are_still_retried_after_connect_errors(closed_port_url: str) -> None:
    # Nothing reached the server, so resending cannot text anyone twice.
    with make(closed_port_url, max_attempts=3, backoff_base=0.01) as transport:
        result = transport.request("subscribe", sub(1))
    assert result.outcome is RequestOutcome.FAILED and result.attempts == 3


def test_events_are_still_retried_after_5xx_but_a_subscribe_is_in_doubt(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(error_rate=1.0, endpoints=["events", "subscribe"], seed=1)
    with make(attentive_emulator.url, max_attempts=3, backoff_base=0.01) as transport:
        event = transport.request("events", {"type": "Order Shipped", "user": {"phone": "+14155550100"}})
        subscribe = transport.request("subscribe", sub(1))
    assert event.outcome is RequestOutcome.FAILED and event.attempts == 3
    assert endpoint_stats(attentive_emulator, "events")["requests"] == 3
    # A 5xx may come after the write (a gateway timeout): subscribing again would text the person again.
    assert subscribe.outcome is RequestOutcome.IN_DOUBT and subscribe.status in (500, 502, 503)
    assert endpoint_stats(attentive_emulator, "subscribe")["requests"] == 1


def test_5xx_with_a_non_json_body_is_retried(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(non_json_rate=1.0, endpoints=["attributes"])
    with make(attentive_emulator.url, max_attempts=2, backoff_base=0.01) as transport:
        result = transport.request("attributes", attrs(1))
    assert result.outcome is RequestOutcome.FAILED and result.status == 502 and result.attempts == 2
    assert "HTTP 502" in result.error


# -- the phones rule: never resend a subscribe that may have arrived -------------------------------


@pytest.mark.parametrize("fault", ["drop_after_apply_rate", "drop_rate"])
def test_dropped_subscribe_is_in_doubt_and_not_resent(attentive_emulator: Emulator, fault: str) -> None:
    attentive_emulator.client.set_faults(**{fault: 1.0}, endpoints=["subscribe"])
    with make(attentive_emulator.url, backoff_base=0.01) as transport:
        result = transport.request("subscribe", sub(7))
        stats = transport.stats.snapshot()
    assert result.outcome is RequestOutcome.IN_DOUBT
    assert result.attempts == 1 and result.status is None
    assert "may have reached Attentive" in result.error
    assert endpoint_stats(attentive_emulator, "subscribe")["requests"] == 1
    assert stats["in_doubt"] == 1 and stats["retries"] == 0
    applied = "+16285550007" in str(attentive_emulator.client.subscriptions())
    assert applied is (fault == "drop_after_apply_rate")


def test_subscribe_read_timeout_is_in_doubt(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(hang_rate=1.0, hang_s=3, endpoints=["unsubscribe"])
    with make(attentive_emulator.url, timeout=0.3) as transport:
        result = transport.request("unsubscribe", unsub(1))
    assert result.outcome is RequestOutcome.IN_DOUBT and "ReadTimeout" in result.error
    assert endpoint_stats(attentive_emulator, "unsubscribe")["requests"] == 1


def test_dropped_attributes_request_is_resent(attentive_emulator: Emulator) -> None:
    # The same fault on an idempotent endpoint is simply retried.
    attentive_emulator.client.set_faults(drop_after_apply_rate=0.5, endpoints=["attributes"], seed=3)
    with make(attentive_emulator.url, max_attempts=20, backoff_base=0.01) as transport:
        results = list(transport.send_many("attributes", (Request(i, attrs(i)) for i in range(20))))
    assert all(r.ok for r in results)
    assert sum(r.attempts for r in results) > 20


# -- 429 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("http_date", [False, True])
def test_retry_after_is_honoured_and_not_an_attempt(stub_server: StubServer, http_date: bool) -> None:
    retry_after = formatdate(time.time() + 3, usegmt=True) if http_date else "2"
    stub_server.script(StubReply(429, {"error": "slow down"}, {"Retry-After": retry_after}), StubReply(200, {}))
    with make(stub_server.url, max_attempts=1) as transport:
        result = transport.request("attributes", attrs(1))
    assert result.ok
    assert result.attempts == 1 and result.throttled == 1
    first, second = stub_server.requests
    # An HTTP-date has one-second resolution, so "now + 3 s" may mean a little over 2 s.
    assert second.at - first.at >= 2.0
    assert second.at - first.at < 4.0


def test_429_from_the_emulator_is_retried_without_using_attempts(attentive_emulator: Emulator) -> None:
    # Configured far above what the (lowered) server limit allows: a burst outside the limiter.
    attentive_emulator.client.set_limits({"attributes": 5})
    with make(attentive_emulator.url, max_attempts=1, rate_limits={"attributes": 100}) as transport:
        results = list(transport.send_many("attributes", (Request(i, attrs(i)) for i in range(15))))
        stats = transport.stats.snapshot()
        margin = transport.limiter.limiter("attributes").margin_s  # type: ignore[attr-defined]
    assert all(r.ok for r in results)
    assert all(r.attempts == 1 for r in results)
    assert sum(r.throttled for r in results) == stats["throttled"] > 0
    emu = endpoint_stats(attentive_emulator, "attributes")
    assert emu["rate_limited"] == stats["throttled"]
    assert emu["max_window"] <= 5
    assert margin > 0.02  # each 429 widened the safety margin


def test_throttling_gives_up_after_the_cap(stub_server: StubServer) -> None:
    stub_server.script(StubReply(429, {}, {"Retry-After": "0.2"}))
    with make(stub_server.url, max_throttle_s=0.5) as transport:
        result = transport.request("attributes", attrs(1))
    assert result.outcome is RequestOutcome.FAILED and result.status == 429
    assert result.attempts == 0 and result.throttled >= 2
    assert "still rate limited" in result.error
    assert transport.stats.throttled == result.throttled == len(stub_server.requests)


# -- throughput and windows --------------------------------------------------------------------


def test_1500_attributes_never_exceed_150_in_any_second(separate_emulator: EmulatorProcess) -> None:
    # Ten full one-second windows at the limit; the benchmarks run 3,000 and more.
    separate_emulator.client.set_faults(latency_ms=50, jitter_ms=10, seed=1)
    with make(separate_emulator.url) as transport:
        results = list(transport.send_many("attributes", (Request(i, attrs(i)) for i in range(1500))))
        stats = transport.stats.snapshot()
    assert len(results) == 1500 and all(r.ok for r in results)
    assert sorted(r.key for r in results) == list(range(1500))
    emu = endpoint_stats(separate_emulator, "attributes")
    assert emu["rate_limited"] == 0 and stats["throttled"] == 0
    assert emu["max_window"] <= 150 and emu["max_window_all"] <= 150
    assert emu["requests"] == 1500
    # Throughput is measured by benchmarks/hook_throughput.py; the limiter's schedule, which decides it, is
    # checked with a fake clock in ratelimit/test_local.py.


def test_150_subscribes_never_exceed_10_in_any_second(separate_emulator: EmulatorProcess) -> None:
    separate_emulator.client.set_faults(latency_ms=50, jitter_ms=10, seed=2)
    with make(separate_emulator.url) as transport:
        results = list(transport.send_many("subscribe", (Request(i, sub(i)) for i in range(150))))
    assert len(results) == 150 and all(r.outcome is RequestOutcome.OK for r in results)
    emu = endpoint_stats(separate_emulator, "subscribe")
    assert emu["rate_limited"] == 0
    assert emu["max_window"] <= 10 and emu["max_window_all"] <= 10
    assert emu["requests"] == 150


def test_transports_sharing_a_key_share_the_budget(separate_emulator: EmulatorProcess) -> None:
    registry = LimiterRegistry()
    config = TransportConfig(separate_emulator.url, KEY)
    results: list[Result] = []

    def run(transport: AttentiveTransport, offset: int) -> None:
        results.extend(transport.send_many("subscribe", (Request(i, sub(i)) for i in range(offset, offset + 15))))

    with AttentiveTransport(config, registry=registry) as a, AttentiveTransport(config, registry=registry) as b:
        threads = [threading.Thread(target=run, args=(a, 0)), threading.Thread(target=run, args=(b, 100))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 30 and all(r.ok for r in results)
    emu = endpoint_stats(separate_emulator, "subscribe")
    assert emu["max_window_all"] <= 10 and emu["rate_limited"] == 0


def test_faults_every_attributes_request_still_ends_ok(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(latency_ms=20, jitter_ms=5, error_rate=0.2, drop_rate=0.05, seed=11)
    # 0.25 ** 10 makes a request failing every attempt a one-in-a-million event.
    with make(attentive_emulator.url, max_attempts=10, backoff_base=0.02, backoff_max=0.5) as transport:
        results = list(transport.send_many("attributes", (Request(i, attrs(i)) for i in range(500))))
        stats = transport.stats.snapshot()
    assert sorted(r.key for r in results) == list(range(500))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    retried = sum(r.attempts - 1 for r in results)
    assert retried == stats["retries"] > 50
    faults = endpoint_stats(attentive_emulator, "attributes")["faults"]
    assert faults["error"] > 0 and faults["drop"] > 0
    assert faults["error"] + faults["drop"] == retried
    assert stats["requests_sent"] == 500 + retried


# -- send_many contract ------------------------------------------------------------------------


def test_send_many_pulls_lazily_in_the_callers_thread_with_backpressure(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(latency_ms=30)
    db = sqlite3.connect(":memory:")  # bound to this thread: using it elsewhere raises
    db.execute("create table intents (k integer)")
    caller = threading.get_ident()
    yielded = 0
    in_flight_at_pull: list[int] = []

    def produce() -> Iterator[Request]:
        for i in range(60):
            assert threading.get_ident() == caller
            db.execute("insert into intents values (?)", (i,))
            in_flight_at_pull.append(i - yielded)
            yield Request(i, attrs(i))

    with make(attentive_emulator.url, max_concurrency=4) as transport:
        for result in transport.send_many("attributes", produce()):
            assert result.ok
            yielded += 1
    assert yielded == 60
    assert db.execute("select count(*) from intents").fetchone() == (60,)
    # Never more than 2 * max_concurrency pulled but unfinished, and refilled one for one: after the
    # window first fills, every pull happens with exactly window - 1 outstanding.
    assert max(in_flight_at_pull) == 7
    assert set(in_flight_at_pull[8:]) == {7}


def test_send_many_reraises_the_iterables_error_after_in_flight_results(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(latency_ms=50)

    def produce() -> Iterator[Request]:
        for i in range(20):
            yield Request(i, attrs(i))
        raise RuntimeError("warehouse cursor died")

    got: list[Result] = []
    with make(attentive_emulator.url) as transport, pytest.raises(RuntimeError, match="cursor died"):
        for result in transport.send_many("attributes", produce()):
            got.append(result)
    assert sorted(r.key for r in got) == list(range(20))
    assert all(r.ok for r in got)
    assert endpoint_stats(attentive_emulator, "attributes")["requests"] == 20


def test_an_unserialisable_body_fails_only_its_own_request(attentive_emulator: Emulator) -> None:
    with make(attentive_emulator.url) as transport:
        results = {r.key: r for r in transport.send_many("attributes", [Request(1, attrs(1)), Request(2, {1: {3}})])}
    assert results[1].ok
    assert results[2].outcome is RequestOutcome.FAILED and results[2].attempts == 0
    assert "not JSON serializable" in results[2].error


def test_send_many_rejects_items_that_are_not_requests(attentive_emulator: Emulator) -> None:
    with make(attentive_emulator.url) as transport, pytest.raises(TypeError, match="Request objects"):
        list(transport.send_many("attributes", [Request(1, attrs(1)), attrs(2)]))  # type: ignore[list-item]
    with make(attentive_emulator.url) as transport, pytest.raises(KeyError):
        transport.send_many("bogus", [])


def test_closing_send_many_early_cancels_the_rest(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(latency_ms=300)
    pulled = 0

    def produce() -> Iterator[Request]:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield Request(i, attrs(i))

    # At 2 requests/s the second request's slot (0.5 s) comes after the first answer (0.3 s), so at
    # close time one request has been sent and the other pulled ones are waiting for their slot.
    with make(attentive_emulator.url, max_concurrency=4, rate_limits={"attributes": 2}) as transport:
        stream = transport.send_many("attributes", produce())
        first = next(stream)
        stream.close()
        assert first.ok
        assert pulled == transport.look_ahead("attributes") == 8  # min(2 x max_concurrency, 1 s of 2/s + 4)
        time.sleep(1.5)
        assert endpoint_stats(attentive_emulator, "attributes")["requests"] == 1
        assert transport.request("me").ok  # still usable


def test_a_window_bounds_how_many_requests_are_pulled_before_their_answers_are_taken(
    attentive_emulator: Emulator,
) -> None:
    attentive_emulator.client.set_faults(latency_ms=50)
    pulled = 0
    most_ahead = 0
    answered = 0

    def produce() -> Iterator[Request]:
        nonlocal pulled, most_ahead
        for i in range(30):
            pulled += 1
            most_ahead = max(most_ahead, pulled - answered)
            yield Request(i, attrs(i))

    with make(attentive_emulator.url) as transport:
        assert transport.look_ahead("attributes") > 3
        for result in transport.send_many("attributes", produce(), window=3):
            assert result.ok
            answered += 1
        assert (pulled, answered, most_ahead) == (30, 30, 3)
        with pytest.raises(ValueError, match="window must be a positive integer"):
            transport.send_many("attributes", [], window=0)


def test_look_ahead_is_about_one_second_of_the_rate(attentive_emulator: Emulator) -> None:
    # What is pulled ahead is what a crash can leave in doubt: keep it to what the limit can start soon.
    with make(attentive_emulator.url) as transport:
        assert transport.look_ahead("attributes") == 128
        assert transport.look_ahead("subscribe") == 14
        assert transport.look_ahead("unsubscribe") == 9
    with make(attentive_emulator.url, max_concurrency=8) as transport:
        assert transport.look_ahead("attributes") == 16


def test_close_stops_the_loop_thread(attentive_emulator: Emulator) -> None:
    transport = make(attentive_emulator.url)
    assert transport.request("me").ok
    names = {t.name for t in threading.enumerate()}
    assert any(n.startswith("attentive-transport-") for n in names)
    transport.close()
    transport.close()  # idempotent
    assert not any(t.name.startswith("attentive-transport-127.0.0.1") and t.is_alive() for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="closed"):
        transport.request("me")


# -- secrets -----------------------------------------------------------------------------------


def test_api_key_never_reaches_logs_output_or_errors(
    attentive_emulator: Emulator,
    closed_port_url: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret, wrong = "sk_live_TOPSECRET_4242", "sk_live_WRONGSECRET_9999"
    attentive_emulator.client.add_key(secret)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with make(attentive_emulator.url, key=secret, max_attempts=2, backoff_base=0.01) as transport:
        texts += [repr(transport), repr(transport.config), repr(transport.stats)]
        attentive_emulator.client.set_faults(error_rate=1.0, endpoints=["events"])
        for result in (
            transport.request("me"),
            transport.request("attributes", {"user": {}, "properties": {}}),
            transport.request("events", {"type": "x", "user": {"phone": "+14155550001"}}),
            transport.request("subscribe", sub(1)),
        ):
            texts += [repr(result), str(result.error)]
    for key, url in ((wrong, attentive_emulator.url), (secret, closed_port_url)):
        with make(url, key=key, max_attempts=1) as transport:
            texts.append(repr(transport.request("me")))
    for bad in ("http://example.com", "ftp://x"):
        with pytest.raises(ValueError) as info:
            TransportConfig(bad, secret)
        texts.append(str(info.value))
    out, err = capfd.readouterr()
    everything = "\n".join([*texts, caplog.text, out, err])
    assert "401" in everything and "ConnectError" in everything  # the failures did happen
    assert secret not in everything
    assert wrong not in everything


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
