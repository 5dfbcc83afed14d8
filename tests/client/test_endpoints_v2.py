"""The v2 endpoints (bulk jobs, segments): their table rows, path parameters, and the transport sending them."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from airflow_provider_attentive.client import (
    ENDPOINTS,
    AttentiveTransport,
    EndpointName,
    LimiterRegistry,
    LocalRateLimiter,
    Request,
    TransportConfig,
    get_endpoint,
)
from airflow_provider_attentive.emulator import Emulator
from tests.helpers.stub_server import StubReply, StubServer

KEY = "test-key"
PHONE = "+14155550101"

V2_TABLE = {
    "bulk": ("POST", "/v2/bulk/user/attributes", ("attributes:write", "subscriptions:write"), True),
    "bulk_job": ("GET", "/v2/bulk/job/{bulkJobId}", (), True),
    "segment_members_add": ("POST", "/v2/bulk/segments/members", ("segments:write",), True),
    "segment_members_remove": ("DELETE", "/v2/bulk/segments/members", ("segments:write",), True),
    "segment_create": ("POST", "/v2/segments", ("segments:write",), False),
    "segment_read": ("GET", "/v2/segments/external/{externalId}", ("segments:read",), True),
    "segment_update": ("PATCH", "/v2/segments/external/{externalId}", ("segments:write",), True),
    "segment_archive": ("DELETE", "/v2/segments/external/{externalId}", ("segments:write",), True),
    "segments_list": ("GET", "/v2/segments", ("segments:read",), True),
}


def make(url: str, key: str = KEY, **kwargs: Any) -> AttentiveTransport:
    return AttentiveTransport(TransportConfig(url, key, **kwargs), registry=LimiterRegistry())


@pytest.mark.parametrize("name", sorted(V2_TABLE))
def test_v2_rows(name: str) -> None:
    method, path, scopes, idempotent = V2_TABLE[name]
    endpoint = get_endpoint(name)
    assert (endpoint.method, endpoint.path, endpoint.scopes, endpoint.idempotent) == (method, path, scopes, idempotent)
    assert endpoint.default_rate == 100
    assert ENDPOINTS["bulk_job"].scope is None and ENDPOINTS["segment_read"].scope == "segments:read"


def test_v1_scopes_read_as_one_scope() -> None:
    assert ENDPOINTS["attributes"].scopes == ("attributes:write",)
    assert ENDPOINTS["me"].scopes == ()


# -- path parameters -------------------------------------------------------------------------------------


def test_path_parameters_are_quoted_into_one_segment() -> None:
    read = get_endpoint(EndpointName.SEGMENT_READ)
    assert read.path_params == ("externalId",)
    assert read.resolve_path({"externalId": "loyalty_gold_2025"}) == "/v2/segments/external/loyalty_gold_2025"
    assert read.resolve_path({"externalId": "a/b c?d#e%"}) == "/v2/segments/external/a%2Fb%20c%3Fd%23e%25"
    assert read.resolve_path({"externalId": "café"}) == "/v2/segments/external/caf%C3%A9"
    assert get_endpoint("me").resolve_path() == "/v1/me"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (None, "needs the path parameter 'externalId'"),
        ({}, "needs the path parameter 'externalId'"),
        ({"externalId": ""}, "needs the path parameter 'externalId'"),
        ({"externalId": ".."}, "cannot be '..'"),
        ({"externalId": "."}, "cannot be '.'"),
        ({"externalId": "x", "bulkJobId": "y"}, "has no path parameter 'bulkJobId'"),
    ],
)
def test_a_bad_path_parameter_is_refused(params: dict[str, str] | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_endpoint("segment_read").resolve_path(params)


def test_a_missing_path_parameter_is_an_error_before_anything_is_sent(stub_server: StubServer) -> None:
    with make(stub_server.url) as transport:
        with pytest.raises(ValueError, match="bulkJobId"):
            transport.request("bulk_job")
        with pytest.raises(ValueError, match="externalId"):
            list(transport.send_many("segment_read", [Request(1, path_params={"externalId": "ok"}), Request(2)]))
    assert [r.path for r in stub_server.requests] == ["/v2/segments/external/ok"]


# -- the transport on the wire ---------------------------------------------------------------------------


def test_delete_with_a_json_body_and_a_202(stub_server: StubServer) -> None:
    stub_server.script(StubReply(202, {"message": "submitted", "batchJobId": "j-1"}))
    body = {"externalId": "gold", "members": [{"phone": PHONE}]}
    with make(stub_server.url, key="sk_v2_stub") as transport:
        result = transport.request("segment_members_remove", body)
    assert result.ok and result.status == 202 and result.body["batchJobId"] == "j-1"
    (sent,) = stub_server.requests
    assert (sent.method, sent.path) == ("DELETE", "/v2/bulk/segments/members")
    assert json.loads(sent.body) == body
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Authorization"] == "Bearer sk_v2_stub"


def test_path_parameters_reach_the_server_quoted(stub_server: StubServer) -> None:
    stub_server.script(StubReply(200, {"externalId": "a/b"}))
    with make(stub_server.url) as transport:
        assert transport.request("segment_update", {"name": "Gold"}, path_params={"externalId": "a/b"}).ok
        results = list(
            transport.send_many("bulk_job", [Request(i, path_params={"bulkJobId": f"j {i}"}) for i in (1, 2)])
        )
    assert all(r.ok for r in results)
    paths = [(r.method, r.path) for r in stub_server.requests]
    assert paths[0] == ("PATCH", "/v2/segments/external/a%2Fb")
    assert sorted(paths[1:]) == [("GET", "/v2/bulk/job/j%201"), ("GET", "/v2/bulk/job/j%202")]


def test_an_error_names_the_resolved_path(stub_server: StubServer) -> None:
    stub_server.script(StubReply(404, {"error": {"message": "no such segment"}}))
    with make(stub_server.url) as transport:
        result = transport.request("segment_read", path_params={"externalId": "nope"})
    assert (
        not result.ok and result.error == "GET /v2/segments/external/nope answered HTTP 404 Not Found: no such segment"
    )


def test_each_v2_endpoint_has_its_own_window() -> None:
    config = TransportConfig("https://api.example.test", KEY, rate_limits={"bulk": 20, "bulk_job": 5})
    with AttentiveTransport(config, registry=LimiterRegistry()) as transport:
        limiter = transport.limiter
        assert isinstance(limiter, LocalRateLimiter)
        assert limiter.limiter("bulk").rate == 20
        assert limiter.limiter("bulk_job").rate == 5
        assert limiter.limiter("segment_members_add").rate == 100
        windows = {id(limiter.limiter(name)) for name in V2_TABLE}
        assert len(windows) == len(V2_TABLE)


# -- against the emulator --------------------------------------------------------------------------------


def _wait_finished(transport: AttentiveTransport, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        status = transport.request("bulk_job", path_params={"bulkJobId": job_id})
        assert status.ok, status.error
        if status.body["status"] in ("COMPLETED", "FAILED") or time.monotonic() > end:
            return status.body
        time.sleep(0.05)


def test_bulk_attributes_and_their_job_on_the_emulator(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_job_settings(pending_s=0.0, delay_s=0.1)
    users = [{"identifiers": {"phone": PHONE}, "attributes": {"custom": {"tier": "gold"}}}]
    with make(attentive_emulator.url) as transport:
        submitted = transport.request("bulk", {"users": users})
        assert submitted.ok and submitted.status == 202, submitted.error
        job = _wait_finished(transport, submitted.body["batchJobId"])
    assert job["status"] == "COMPLETED" and job["totalRecords"] == 1 and job["url"]
    assert attentive_emulator.client.attributes()[PHONE] == {"tier": "gold"}


def test_segments_on_the_emulator(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_job_settings(pending_s=0.0, delay_s=0.05)
    segment = {"externalId": "gold/2025", "name": "Gold members"}
    members = {"externalId": "gold/2025", "members": [{"phone": PHONE}]}
    with make(attentive_emulator.url) as transport:
        created = transport.request("segment_create", segment)
        assert created.status == 201, created.error
        ref = {"externalId": "gold/2025"}
        assert transport.request("segment_read", path_params=ref).body["name"] == "Gold members"
        updated = transport.request("segment_update", {"name": "Gold"}, path_params=ref)
        assert updated.ok and updated.body["name"] == "Gold", updated.error
        added = transport.request("segment_members_add", members)
        assert added.status == 202, added.error
        assert _wait_finished(transport, added.body["batchJobId"])["status"] == "COMPLETED"
        removed = transport.request("segment_members_remove", members)
        assert removed.status == 202, removed.error
        assert _wait_finished(transport, removed.body["batchJobId"])["status"] == "COMPLETED"
        listed = transport.request("segments_list", params={"externalId": "gold/2025"})
        assert listed.ok and [s["externalId"] for s in listed.body["segments"]] == ["gold/2025"]
        archived = transport.request("segment_archive", path_params=ref)
        assert archived.ok and archived.status == 204 and archived.body is None
        assert transport.request("segment_read", path_params=ref).status == 404
    calls = {(r["method"], r["path"]) for r in attentive_emulator.client.requests()}
    assert ("DELETE", "/v2/bulk/segments/members") in calls
    assert ("PATCH", "/v2/segments/external/gold%2F2025") in calls
