"""What every v2 route shares with v1: keys, the beta gate, templated paths, rate limits, faults, logs and stats."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_attentive.emulator import ENDPOINT_NAMES, Emulator, KeySpec
from airflow_provider_attentive.emulator.api_v2 import V2_ROUTES
from airflow_provider_attentive.emulator.routing import Route, RouteTable
from tests.helpers.emulator import PHONE, error_message, v2_client

BULK = {"users": [{"identifiers": {"phone": PHONE}, "attributes": {"custom": {"tier": "gold"}}}]}
MEMBERS = {"externalId": "gold", "members": [{"phone": PHONE}]}
JOB = "00000000-0000-4000-8000-000000000000"

# (route name, method, path below /v2, body)
V2_CALLS = [
    ("bulk", "POST", "/bulk/user/attributes", BULK),
    ("bulk_job", "GET", f"/bulk/job/{JOB}", None),
    ("segment_members_add", "POST", "/bulk/segments/members", MEMBERS),
    ("segment_members_remove", "DELETE", "/bulk/segments/members", MEMBERS),
    ("segment_create", "POST", "/segments", {"name": "Gold", "externalId": "gold"}),
    ("segment_read", "GET", "/segments/external/gold", None),
    ("segment_update", "PATCH", "/segments/external/gold", {"name": "Gold 2"}),
    ("segment_archive", "DELETE", "/segments/external/gold", None),
    ("segments_list", "GET", "/segments", None),
]


@pytest.fixture
def v2(attentive_emulator: Emulator) -> Iterator[httpx.Client]:
    with v2_client(attentive_emulator.url) as client:
        yield client


def test_the_route_table_names_every_v2_endpoint() -> None:
    assert [(r.name, r.method, r.path) for r in V2_ROUTES] == [
        ("bulk", "POST", "/v2/bulk/user/attributes"),
        ("bulk_job", "GET", "/v2/bulk/job/{bulkJobId}"),
        ("segment_members_add", "POST", "/v2/bulk/segments/members"),
        ("segment_members_remove", "DELETE", "/v2/bulk/segments/members"),
        ("segment_create", "POST", "/v2/segments"),
        ("segment_read", "GET", "/v2/segments/external/{externalId}"),
        ("segment_update", "PATCH", "/v2/segments/external/{externalId}"),
        ("segment_archive", "DELETE", "/v2/segments/external/{externalId}"),
        ("segments_list", "GET", "/v2/segments"),
    ]
    assert all(r.beta and r.rate_limit == 100 for r in V2_ROUTES)
    assert {r.name for r in V2_ROUTES} <= set(ENDPOINT_NAMES)
    assert [call[0] for call in V2_CALLS] == [r.name for r in V2_ROUTES]


def test_templated_paths_match_by_segment_and_decode_their_values() -> None:
    def handler(state: object, call: object) -> tuple[int, None]:
        return 200, None

    table = RouteTable(
        [
            Route("list", "GET", "/v9/things", None, 1, handler),
            Route("one", "GET", "/v9/things/{thingId}", None, 1, handler),
            Route("part", "GET", "/v9/things/{thingId}/parts/{partId}", None, 1, handler),
        ]
    )
    assert table.match("/v9/things") == ({"GET": table.by_name["list"]}, {})
    assert table.match("/v9/things/a%2Fb") == ({"GET": table.by_name["one"]}, {"thingId": "a/b"})
    assert table.match("/v9/things/x/parts/7")[1] == {"thingId": "x", "partId": "7"}
    assert table.match("/v9/things/") == ({}, {})
    assert table.match("/v9/things/x/y") == ({}, {})
    with pytest.raises(ValueError, match="duplicate route"):
        RouteTable([Route("a", "GET", "/v9/{x}", None, 1, handler), Route("b", "GET", "/v9/{x}", None, 1, handler)])


def test_path_values_reach_the_handlers(v2: httpx.Client) -> None:
    assert v2.post("/segments", json={"name": "Slash", "externalId": "a/b c"}).status_code == 201
    read = v2.get("/segments/external/a%2Fb%20c")
    assert read.status_code == 200 and read.json()["externalId"] == "a/b c"
    unknown = v2.get("/segments/external/zz%20top")
    assert unknown.status_code == 404 and "'zz top'" in error_message(unknown)


def test_paths_that_are_no_v2_endpoint_are_404_and_wrong_methods_405(v2: httpx.Client) -> None:
    for path in ("/bulk/job/", "/nope", "/segments/external/a/b"):
        response = v2.get(path)
        assert response.status_code == 404, path
        assert "v2" in error_message(response)
    wrong = v2.put("/segments/external/gold", json={})
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "DELETE, GET, PATCH"


@pytest.mark.parametrize(("name", "method", "path", "body"), V2_CALLS)
def test_missing_and_unknown_keys_are_401(
    attentive_emulator: Emulator, name: str, method: str, path: str, body: object
) -> None:
    url = f"{attentive_emulator.url}/v2{path}"
    assert httpx.request(method, url, json=body).status_code == 401
    wrong = httpx.request(method, url, json=body, headers={"Authorization": "Bearer not-a-key"})
    assert wrong.status_code == 401 and "not-a-key" not in wrong.text
    assert wrong.headers["x-ratelimit-limit"] == "100"


@pytest.mark.parametrize(("name", "method", "path", "body"), V2_CALLS)
def test_a_key_without_v2_access_finds_nothing_under_v2(
    attentive_emulator: Emulator, name: str, method: str, path: str, body: object
) -> None:
    client = attentive_emulator.client
    client.add_key("v1-only-key", v2_access=False)
    assert client._call("GET", "/keys")["*******-key"]["v2_access"] is False
    with v2_client(attentive_emulator.url) as full:
        full.post("/segments", json={"name": "Gold", "externalId": "gold"})
    with v2_client(attentive_emulator.url, "v1-only-key") as v1_only:
        response = v1_only.request(method, path, json=body)
    assert response.status_code == 404
    assert "no v2 access" in error_message(response)
    assert client.jobs() == []
    assert client.segments()["gold"]["name"] == "Gold" and not client.segments()["gold"]["archived"]
    assert client.stats()["endpoints"][name]["status"].get("404") == 1
    me = httpx.get(f"{attentive_emulator.url}/v1/me", headers={"Authorization": "Bearer v1-only-key"})
    assert me.status_code == 200


def test_v2_access_is_a_key_spec_option() -> None:
    assert KeySpec().v2_access is True
    assert KeySpec(v2_access=False).to_dict()["v2_access"] is False


def test_v2_routes_have_their_own_rate_limit_windows(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    client = attentive_emulator.client
    assert client.limits()["bulk_job"] == 100 and client.limits()["segments_list"] == 100
    client.set_limits({"segments_list": 3})
    responses = [v2.get("/segments") for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0", "0"]
    assert responses[-1].headers["x-ratelimit-limit"] == "3"
    assert "rate limit" in error_message(responses[-1])
    assert v2.get("/segments/external/none").status_code == 404  # another route, another window
    stats = client.stats()["endpoints"]["segments_list"]
    assert stats["rate_limited"] == 2 and stats["max_window"] == 3


def test_faults_reach_v2_routes_by_name(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    client = attentive_emulator.client
    client.set_faults(error_rate=1.0, endpoints=["bulk"])
    assert v2.post("/bulk/user/attributes", json=BULK).status_code in (500, 502, 503)
    assert client.jobs() == []
    assert v2.get("/segments").status_code == 200
    client.set_faults(drop_after_apply_rate=1.0, endpoints=["segment_create"])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        v2.post("/segments", json={"name": "Gold", "externalId": "gold"})
    assert list(client.segments()) == ["gold"]
    stats = client.stats()["endpoints"]
    assert stats["bulk"]["faults"]["error"] == 1 and stats["segment_create"]["faults"]["drop_after_apply"] == 1


def test_the_request_log_and_stats_count_v2_routes_by_name(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    v2.post("/segments", json={"name": "Gold", "externalId": "gold"})
    v2.get("/segments/external/gold")
    v2.request("DELETE", "/bulk/segments/members", json=MEMBERS)
    client = attentive_emulator.client
    log = client.requests()
    assert [(e["endpoint"], e["method"], e["path"], e["status"]) for e in log] == [
        ("segment_create", "POST", "/v2/segments", 201),
        ("segment_read", "GET", "/v2/segments/external/gold", 200),
        ("segment_members_remove", "DELETE", "/v2/bulk/segments/members", 202),
    ]
    assert log[2]["body"] == MEMBERS and log[2]["key"] == "****-key"
    assert [e["endpoint"] for e in client.requests(endpoint="segment_read")] == ["segment_read"]
    endpoints = client.stats()["endpoints"]
    assert {r.name for r in V2_ROUTES} <= set(endpoints)
    assert endpoints["segment_create"]["status"] == {"201": 1}
    assert endpoints["segment_members_remove"]["requests"] == 1 and endpoints["bulk"]["requests"] == 0
