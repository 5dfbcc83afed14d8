"""v2 segments: create, read, update, archive, list, and member jobs with their results lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_attentive.emulator import Emulator
from tests.helpers.emulator import EMAIL, PHONE, error_message, finished_job, v2_client

MEMBERS = "/bulk/segments/members"


@pytest.fixture
def v2(attentive_emulator: Emulator) -> Iterator[httpx.Client]:
    with v2_client(attentive_emulator.url) as client:
        yield client


def _create(v2: httpx.Client, **body: Any) -> dict[str, Any]:
    response = v2.post("/segments", json={"name": "Gold", **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _member_job(v2: httpx.Client, method: str, external_id: str, members: list[dict[str, Any]]) -> list[Any]:
    """Submit a member job, wait for it, and return its results lines, parsed."""
    response = v2.request(method, MEMBERS, json={"externalId": external_id, "members": members})
    assert response.status_code == 202, response.text
    assert response.json()["message"]
    done = finished_job(v2, response.json()["batchJobId"])
    assert done["status"] == "COMPLETED" and done["totalRecords"] == len(members)
    return [json.loads(line) for line in httpx.get(done["url"]).text.splitlines()]


def test_create_read_update_archive(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    created = _create(v2, name="  Loyalty Gold  ", externalId="gold")
    assert set(created) == {"externalId", "name", "description", "created", "updated"}
    assert created["externalId"] == "gold" and created["name"] == "Loyalty Gold"  # trimmed
    assert created["description"] == "Manual Segment Upload Public API V2"
    assert created["created"].endswith("Z") and created["created"] == created["updated"]
    assert v2.get("/segments/external/gold").json() == created

    patched = v2.patch("/segments/external/gold", json={"description": " Top tier "})
    assert patched.status_code == 200
    assert patched.json()["description"] == "Top tier" and patched.json()["name"] == "Loyalty Gold"
    assert v2.get("/segments/external/gold").json()["description"] == "Top tier"

    archived = v2.delete("/segments/external/gold")
    assert archived.status_code == 204 and archived.content == b""
    assert v2.get("/segments/external/gold").status_code == 404
    assert v2.patch("/segments/external/gold", json={"name": "x"}).status_code == 404
    assert v2.delete("/segments/external/gold").status_code == 404
    info = attentive_emulator.client.segments()["gold"]
    assert info["archived"] is True and info["members"] == []


def test_an_external_id_stays_taken_after_archiving(v2: httpx.Client) -> None:
    _create(v2, externalId="gold")
    taken = v2.post("/segments", json={"name": "Other", "externalId": "gold"})
    assert taken.status_code == 409 and "already used" in error_message(taken)
    v2.delete("/segments/external/gold")
    again = v2.post("/segments", json={"name": "Other", "externalId": "gold"})
    assert again.status_code == 409 and "archived" in error_message(again)


def test_an_external_id_is_generated_when_omitted(v2: httpx.Client) -> None:
    first, second = _create(v2), _create(v2)
    assert first["externalId"] and first["externalId"] != second["externalId"]


@pytest.mark.parametrize(
    ("method", "path", "body", "needle"),
    [
        ("POST", "/segments", {"name": "   "}, "name cannot be empty"),
        ("POST", "/segments", {"description": "no name"}, "CreateSegmentRequest"),
        ("POST", "/segments", {"name": "G", "description": " x "}, "at least 2"),
        ("POST", "/segments", {"name": "G" * 241}, "CreateSegmentRequest"),
        ("POST", "/segments", {"name": "G", "externalId": "e" * 256}, "CreateSegmentRequest"),
        ("PATCH", "/segments/external/seg", {}, "at least one field"),
        ("PATCH", "/segments/external/seg", {"name": " "}, "name cannot be empty"),
    ],
)
def test_invalid_segment_bodies_are_400(
    v2: httpx.Client, method: str, path: str, body: dict[str, Any], needle: str
) -> None:
    _create(v2, externalId="seg")
    response = v2.request(method, path, json=body)
    assert response.status_code == 400
    assert needle in error_message(response)


def test_list_filters_and_pages_live_segments(v2: httpx.Client) -> None:
    for i in range(5):
        _create(v2, name=f"Tier {i}", externalId=f"t{i}")
    _create(v2, name="Other", externalId="other")
    v2.delete("/segments/external/t2")

    everything = v2.get("/segments").json()
    assert [s["externalId"] for s in everything["segments"]] == ["t0", "t1", "t3", "t4", "other"]
    assert everything["hasMore"] is False and everything["cursor"] is None
    assert [s["externalId"] for s in v2.get("/segments", params={"name": "tier"}).json()["segments"]] == [
        "t0",
        "t1",
        "t3",
        "t4",
    ]
    assert [s["name"] for s in v2.get("/segments", params={"externalId": "t3"}).json()["segments"]] == ["Tier 3"]

    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = v2.get("/segments", params=params).json()
        seen += [s["externalId"] for s in page["segments"]]
        if not page["hasMore"]:
            assert page["cursor"] is None
            break
        cursor = page["cursor"]
    assert seen == ["t0", "t1", "t3", "t4", "other"]
    assert v2.get("/segments", params={"updatedSince": "2999-01-01T00:00:00Z"}).json()["segments"] == []


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=ten", "cursor=bogus", "name=%20", "updatedSince=yesterday"]
)
def test_list_refuses_bad_query_parameters(v2: httpx.Client, query: str) -> None:
    response = v2.get(f"/segments?{query}")
    assert response.status_code == 400
    error_message(response)


def test_member_jobs_add_and_remove_with_a_line_per_member(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    _create(v2, externalId="gold")
    added = [
        {"phone": PHONE, "email": EMAIL},
        {"email": "two@example.com"},
        {"clientUserId": "u-3"},
        {"phone": "415-555-0100"},  # not E.164
        {},  # no identifier
        {"email": "not-an-address"},
    ]
    lines = _member_job(v2, "POST", "gold", added)
    assert [line["request"] for line in lines] == added
    assert [line["response"]["status"] for line in lines] == [200, 200, 200, 400, 400, 400]
    assert "E.164" in lines[3]["response"]["message"] and "identifier" in lines[4]["response"]["message"]
    members = attentive_emulator.client.segments()["gold"]["members"]
    assert sorted(members) == sorted([PHONE, "two@example.com", "clientUserId:u-3"])

    # Adding someone again is fine; it stays one member.
    assert [line["response"]["status"] for line in _member_job(v2, "POST", "gold", [{"phone": PHONE}])] == [200]
    assert len(attentive_emulator.client.segments()["gold"]["members"]) == 3

    removed = _member_job(v2, "DELETE", "gold", [{"phone": PHONE}, {"email": "stranger@example.com"}, {"phone": "1"}])
    assert [line["response"]["status"] for line in removed] == [200, 404, 400]
    assert removed[1]["response"]["message"] == "not a member of the segment"
    assert sorted(attentive_emulator.client.segments()["gold"]["members"]) == ["clientUserId:u-3", "two@example.com"]
    kinds = [job["kind"] for job in attentive_emulator.client.jobs()]
    assert kinds == ["segment_members_add", "segment_members_add", "segment_members_remove"]


def test_members_are_applied_only_when_the_job_completes(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    client = attentive_emulator.client
    _create(v2, externalId="gold")
    client.set_job_settings(hold=True)
    response = v2.post(MEMBERS, json={"externalId": "gold", "members": [{"phone": PHONE}]})
    assert response.status_code == 202
    assert client.segments()["gold"]["members"] == []
    client.release_jobs()
    finished_job(v2, response.json()["batchJobId"])
    assert client.segments()["gold"]["members"] == [PHONE]


def test_member_jobs_for_unknown_or_archived_segments_are_404(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    unknown = v2.post(MEMBERS, json={"externalId": "nope", "members": [{"phone": PHONE}]})
    assert unknown.status_code == 404 and "nope" in error_message(unknown)
    _create(v2, externalId="gone")
    v2.delete("/segments/external/gone")
    assert v2.request("DELETE", MEMBERS, json={"externalId": "gone", "members": [{"phone": PHONE}]}).status_code == 404
    assert attentive_emulator.client.jobs() == []


def test_member_request_schema(v2: httpx.Client) -> None:
    _create(v2, externalId="gold")
    too_many = [{"phone": f"+1415{i:07d}"} for i in range(10_001)]
    for body in (
        {"externalId": "gold", "members": too_many},
        {"externalId": "gold", "members": []},
        {"members": [{"phone": PHONE}]},
        {"externalId": "gold", "members": [{"clientUserId": "u" * 101}]},
    ):
        response = v2.post(MEMBERS, json=body)
        assert response.status_code == 400
        assert "SegmentMembers" in error_message(response)
    exactly = v2.post(MEMBERS, json={"externalId": "gold", "members": too_many[:10_000]})
    assert exactly.status_code == 202


def test_segment_scopes(attentive_emulator: Emulator) -> None:
    client = attentive_emulator.client
    client.add_key("seg-reader-key", scopes=["segments:read"])
    with v2_client(attentive_emulator.url) as writer:
        _create(writer, externalId="gold")
    with v2_client(attentive_emulator.url, "seg-reader-key") as reader:
        assert reader.get("/segments/external/gold").status_code == 200
        assert reader.get("/segments").status_code == 200
        for method, path, body in (
            ("POST", "/segments", {"name": "x"}),
            ("PATCH", "/segments/external/gold", {"name": "x"}),
            ("DELETE", "/segments/external/gold", None),
            ("POST", MEMBERS, {"externalId": "gold", "members": [{"phone": PHONE}]}),
            ("DELETE", MEMBERS, {"externalId": "gold", "members": [{"phone": PHONE}]}),
        ):
            response = reader.request(method, path, json=body)
            assert response.status_code == 403, (method, path)
            assert "segments:write" in error_message(response)
    with v2_client(attentive_emulator.url, "readonly-key") as nobody:
        response = nobody.get("/segments/external/gold")
        assert response.status_code == 403 and "segments:read" in error_message(response)
    assert list(client.segments()) == ["gold"] and client.jobs() == []
