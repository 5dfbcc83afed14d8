"""v2 bulk user attributes: submission, the job lifecycle, results files and their faults, over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from airflow_provider_attentive.emulator import Emulator, EmulatorError
from tests.helpers.emulator import EMAIL, PHONE, error_message, finished_job, v2_client

GOLD: dict[str, Any] = {"identifiers": {"phone": PHONE}, "attributes": {"custom": {"tier": "gold", "points": 12}}}
BY_EMAIL = {"identifiers": {"email": EMAIL}, "attributes": {"custom": {"tier": "silver"}}}
BY_CLIENT_ID = {"identifiers": {"clientUserId": "u-1"}, "attributes": {"custom": {"vip": True}}}
UNKNOWN_JOB = "00000000-0000-4000-8000-000000000000"
BY_CUSTOM_ID = {"identifiers": {"customIdentifiers": [{"key": "loyalty", "value": "L9"}]}, "attributes": {"custom": {}}}


@pytest.fixture
def v2(attentive_emulator: Emulator) -> Iterator[httpx.Client]:
    with v2_client(attentive_emulator.url) as client:
        yield client


def _submit(v2: httpx.Client, users: list[dict[str, Any]]) -> str:
    response = v2.post("/bulk/user/attributes", json={"users": users})
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"message", "batchJobId"} and body["message"]
    return str(body["batchJobId"])


def _lines(url: str) -> list[str]:
    response = httpx.get(url)
    assert response.status_code == 200, response.text
    return response.text.splitlines()


def test_a_job_goes_pending_in_progress_completed_and_applies_its_users_then(
    v2: httpx.Client, attentive_emulator: Emulator
) -> None:
    client = attentive_emulator.client
    client.set_job_settings(pending_s=0.2, delay_s=0.5)
    response = v2.post("/bulk/user/attributes", json={"users": [GOLD, BY_EMAIL, BY_CLIENT_ID, BY_CUSTOM_ID]})
    assert response.status_code == 202
    assert response.headers["x-ratelimit-limit"] == "100"
    job_id = response.json()["batchJobId"]

    first = v2.get(f"/bulk/job/{job_id}").json()
    assert first == {"bulkJobId": job_id, "status": "PENDING", "totalRecords": 4}  # no url before completion
    assert client.attributes() == {}
    time.sleep(0.25)
    assert v2.get(f"/bulk/job/{job_id}").json()["status"] == "IN_PROGRESS"
    assert client.attributes() == {}

    done = finished_job(v2, job_id)
    assert done["status"] == "COMPLETED" and done["totalRecords"] == 4
    assert client.attributes() == {
        PHONE: {"tier": "gold", "points": 12},
        EMAIL: {"tier": "silver"},
        "clientUserId:u-1": {"vip": True},
        "loyalty:L9": {},
    }
    # The same store as v1 custom attributes: a v1 read sees what the bulk job wrote.
    read = httpx.get(
        f"{attentive_emulator.url}/v1/attributes/custom",
        params={"phone": PHONE},
        headers={"Authorization": "Bearer test-key"},
    )
    assert {a["name"]: a["value"] for a in read.json()} == {"tier": "gold", "points": 12}
    [job] = client.jobs()
    assert job["id"] == job_id and job["kind"] == "bulk" and job["status"] == "COMPLETED"
    assert job["records"] == 4 and job["key"] == "****-key" and job["results_lines"] == 4
    assert client.stats()["endpoints"]["bulk"]["status"] == {"202": 1}


def test_results_have_one_line_per_item_with_its_own_outcome(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_enumerated_attributes({"tier": ["gold", "silver"]})
    users: list[dict[str, Any]] = [
        GOLD,
        {"identifiers": {"phone": "4155550100"}, "attributes": {"custom": {"a": 1}}},  # not E.164
        {"attributes": {"custom": {"a": 1}}},  # no identifiers at all
        {"identifiers": {"customIdentifiers": []}},  # identifiers without any value
        {"identifiers": {"email": "  "}},  # an empty identifier
        {"identifiers": {"email": EMAIL}, "attributes": {"custom": {"tier": "bronze"}}},  # not an enumerated value
    ]
    done = finished_job(v2, _submit(v2, users))
    lines = [json.loads(line) for line in _lines(done["url"])]
    assert [line["request"] for line in lines] == users
    assert [line["response"]["status"] for line in lines] == [200, 400, 400, 400, 400, 400]
    messages = [line["response"]["message"] for line in lines]
    assert all(isinstance(m, str) and m for m in messages)
    assert "E.164" in messages[1] and "identifier" in messages[2] and "identifier" in messages[3]
    assert "identifiers.email" in messages[4] and "enumerated" in messages[5]
    # Only the good item was applied.
    assert attentive_emulator.client.attributes() == {PHONE: {"tier": "gold", "points": 12}}


def test_the_results_link_is_pre_signed_on_another_host_and_needs_no_key(
    v2: httpx.Client, attentive_emulator: Emulator
) -> None:
    client = attentive_emulator.client
    done = finished_job(v2, _submit(v2, [GOLD]))
    link = urlsplit(done["url"])
    api = urlsplit(attentive_emulator.url)
    assert api.hostname == "127.0.0.1" and link.hostname == "localhost" and link.port == api.port
    assert link.path == f"/_emulator/results/{done['bulkJobId']}.jsonl"
    assert "expires=" in link.query and "sig=" in link.query

    assert len(_lines(done["url"])) == 1
    assert httpx.get(done["url"], headers={"Authorization": "Bearer test-key"}).status_code == 200
    hits = client.results_downloads()
    assert [(h["job_id"], h["status"], h["authorization"]) for h in hits] == [
        (done["bulkJobId"], 200, False),
        (done["bulkJobId"], 200, True),
    ]
    assert hits[0]["host"] == link.netloc


@pytest.mark.parametrize(
    "spoil",
    [
        lambda url: url.split("&sig=")[0],  # no signature
        lambda url: url[:-4] + ("0000" if not url.endswith("0000") else "1111"),  # wrong signature
        lambda url: url.replace("expires=", "expires=1"),  # a later expiry the signature does not cover
        lambda url: url.split("?")[0],  # no query at all
    ],
)
def test_a_wrong_or_missing_signature_is_403(v2: httpx.Client, attentive_emulator: Emulator, spoil: Any) -> None:
    done = finished_job(v2, _submit(v2, [GOLD]))
    response = httpx.get(spoil(done["url"]))
    assert response.status_code == 403
    assert "sign" in error_message(response)
    assert [h["status"] for h in attentive_emulator.client.results_downloads()] == [403]


def test_an_expired_link_is_403(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_job_settings(delay_s=0, results_ttl_s=0)
    done = finished_job(v2, _submit(v2, [GOLD]))
    response = httpx.get(done["url"])
    assert response.status_code == 403 and "expired" in error_message(response)


def test_unknown_jobs_and_other_keys_jobs_are_404(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    job_id = _submit(v2, [GOLD])
    unknown = v2.get(f"/bulk/job/{UNKNOWN_JOB}")
    assert unknown.status_code == 404 and "not found" in error_message(unknown)
    attentive_emulator.client.add_key("other-key-5678")
    with v2_client(attentive_emulator.url, "other-key-5678") as other:
        foreign = other.get(f"/bulk/job/{job_id}")
    assert foreign.status_code == 404
    # Nothing tells another key's job from one that does not exist.
    assert error_message(foreign).replace(job_id, "?") == error_message(unknown).replace(UNKNOWN_JOB, "?")
    # The status route needs no scope: a key without any still gets 404, not 403.
    with v2_client(attentive_emulator.url, "readonly-key") as readonly:
        assert readonly.get(f"/bulk/job/{job_id}").status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"users": [GOLD] * 257}, "UserAttributes"),
        ({"users": []}, "UserAttributes"),
        ({}, "users"),
        ({"users": [{"identifiers": {}}]}, "UserAttributes"),
        ({"users": [{"identifiers": {"phone": PHONE}, "attributes": {"custom": {"city": {"a": "b"}}}}]}, "a map"),
        ({"users": [GOLD, {"identifiers": {"phone": PHONE}, "attributes": {"custom": {"c": ["x"]}}}]}, "users[1]"),
        ({"users": [{"identifiers": {"customIdentifiers": [{"name": "v1-style", "value": "1"}]}}]}, "key"),
    ],
)
def test_bodies_outside_the_schema_are_refused_whole(
    v2: httpx.Client, attentive_emulator: Emulator, body: dict[str, Any], needle: str
) -> None:
    response = v2.post("/bulk/user/attributes", json=body)
    assert response.status_code == 400
    assert needle in error_message(response)
    assert attentive_emulator.client.jobs() == []


def test_users_carrying_subscriptions_are_counted(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    subscribing = {
        **GOLD,
        "subscriptions": [{"signUpSourceId": "64140", "channel": "TEXT", "subscriptionType": "MARKETING"}],
    }
    finished_job(v2, _submit(v2, [subscribing, BY_EMAIL]))
    client = attentive_emulator.client
    assert client.stats()["bulk_users_with_subscriptions"] == 1
    assert client.jobs()[0]["users_with_subscriptions"] == 1
    assert client.subscriptions() == {}  # counted, never applied
    # The published schema requires subscriptionType on each item; the emulator keeps that requirement.
    partial = {**GOLD, "subscriptions": [{"signUpSourceId": "64140", "channel": "TEXT"}]}
    assert v2.post("/bulk/user/attributes", json={"users": [partial]}).status_code == 400


def test_bulk_needs_both_write_scopes(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.add_key("attrs-only-key", scopes=["attributes:write"])
    with v2_client(attentive_emulator.url, "attrs-only-key") as attrs_only:
        response = attrs_only.post("/bulk/user/attributes", json={"users": [GOLD]})
    assert response.status_code == 403
    assert "'subscriptions:write' scope" in error_message(response)
    with v2_client(attentive_emulator.url, "readonly-key") as readonly:
        response = readonly.post("/bulk/user/attributes", json={"users": [GOLD]})
    assert response.status_code == 403
    assert "'attributes:write' and 'subscriptions:write' scopes" in error_message(response)
    assert attentive_emulator.client.jobs() == []


def test_held_jobs_stay_in_progress_until_released(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    client = attentive_emulator.client
    client.set_job_settings(hold=True, delay_s=0, pending_s=0)
    first, second = _submit(v2, [GOLD]), _submit(v2, [BY_EMAIL])
    time.sleep(0.1)
    assert v2.get(f"/bulk/job/{first}").json()["status"] == "IN_PROGRESS"
    assert [(j["status"], j["held"]) for j in client.jobs()] == [("IN_PROGRESS", True)] * 2
    assert client.attributes() == {}

    assert client.release_jobs([first]) == [first]
    assert v2.get(f"/bulk/job/{first}").json()["status"] == "COMPLETED"
    assert v2.get(f"/bulk/job/{second}").json()["status"] == "IN_PROGRESS"
    assert list(client.attributes()) == [PHONE]
    assert client.release_jobs() == [second]
    assert finished_job(v2, second)["status"] == "COMPLETED"
    assert client.release_jobs() == []
    with pytest.raises(EmulatorError, match="unknown bulk job"):
        client.release_jobs(["nope"])


def test_failed_jobs_have_no_results_and_apply_nothing(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    client = attentive_emulator.client
    client.set_job_settings(fail_rate=1.0)
    done = finished_job(v2, _submit(v2, [GOLD, BY_EMAIL]))
    assert done == {"bulkJobId": done["bulkJobId"], "status": "FAILED", "totalRecords": 2}
    assert client.attributes() == {}
    assert client.jobs()[0]["status"] == "FAILED"


def test_a_share_of_jobs_fails_reproducibly(v2: httpx.Client, attentive_emulator: Emulator) -> None:
    def statuses() -> list[str]:
        attentive_emulator.client.reset()
        attentive_emulator.client.set_job_settings(fail_rate=0.5, delay_s=0, seed=11)
        return [finished_job(v2, _submit(v2, [GOLD]))["status"] for _ in range(12)]

    first = statuses()
    assert {"COMPLETED", "FAILED"} == set(first)
    assert statuses() == first


def test_results_faults_drop_and_garble_lines_but_every_item_is_applied(
    v2: httpx.Client, attentive_emulator: Emulator
) -> None:
    client = attentive_emulator.client
    client.set_job_settings(drop_line_rate=0.3, garble_line_rate=0.3, seed=5)
    users = [{"identifiers": {"phone": f"+1415555{i:04d}"}, "attributes": {"custom": {"n": i}}} for i in range(40)]
    done = finished_job(v2, _submit(v2, users))
    lines = _lines(done["url"])
    readable = []
    for line in lines:
        try:
            readable.append(json.loads(line))
        except ValueError:
            continue
    assert 0 < len(readable) < len(lines) < len(users)
    assert client.jobs()[0]["results_lines"] == len(lines)
    assert all(r["response"]["status"] == 200 for r in readable)
    assert len(client.attributes()) == len(users)
    # The file is the same on every download.
    assert _lines(done["url"]) == lines


def test_job_settings_are_validated_and_reset(attentive_emulator: Emulator) -> None:
    client = attentive_emulator.client
    defaults = client.job_settings()
    assert defaults["delay_s"] <= 0.5 and defaults["hold"] is False and defaults["fail_rate"] == 0
    for bad in ({"fail_rate": 2}, {"drop_line_rate": 0.6, "garble_line_rate": 0.6}, {"delay_s": -1}):
        with pytest.raises(EmulatorError):
            client.set_job_settings(**bad)
    with pytest.raises(EmulatorError, match="unknown job setting"):
        client._call("POST", "/jobs/settings", {"bogus": 1})
    assert client.set_job_settings(hold=True)["hold"] is True
    client.reset()
    assert client.job_settings() == defaults
