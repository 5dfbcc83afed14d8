"""Auth, routing and the success shape of every emulated endpoint, over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_attentive.emulator import Emulator
from tests.helpers.emulator import EMAIL, PHONE, error_message

ATTRIBUTES = {"properties": {"age": "24", "VIP": True}, "user": {"phone": PHONE}}
EVENT = {"type": "Order Shipped", "properties": {"Order Id": "1"}, "user": {"email": EMAIL}}
SUBSCRIBE = {"user": {"phone": PHONE}, "signUpSourceId": "64140"}

# (method, path, json body, required scope)
CALLS = [
    ("POST", "/attributes/custom", ATTRIBUTES, "attributes:write"),
    ("POST", "/events/custom", EVENT, "events:write"),
    ("POST", "/subscriptions", SUBSCRIBE, "subscriptions:write"),
    ("POST", "/subscriptions/unsubscribe", {"user": {"phone": PHONE}}, "subscriptions:write"),
    ("GET", f"/subscriptions?phone=%2B{PHONE[1:]}", None, "subscriptions:read"),
    ("POST", "/identity-resolution/user-identifiers", {"phone": PHONE, "clientUserId": "u1"}, "identity:write"),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), CALLS)
def test_missing_and_unknown_keys_are_401(
    attentive_emulator: Emulator, method: str, path: str, body: object, scope: str
) -> None:
    url = f"{attentive_emulator.url}/v1{path}"
    missing = httpx.request(method, url, json=body)
    assert missing.status_code == 401
    assert "bearer" in error_message(missing).lower()
    wrong = httpx.request(method, url, json=body, headers={"Authorization": "Bearer not-a-key"})
    assert wrong.status_code == 401
    assert "not-a-key" not in wrong.text  # keys are never echoed
    assert wrong.headers["x-ratelimit-limit"].isdigit()


@pytest.mark.parametrize(("method", "path", "body", "scope"), CALLS)
def test_key_without_scope_is_403(
    attentive_emulator: Emulator, method: str, path: str, body: object, scope: str
) -> None:
    response = httpx.request(
        method, f"{attentive_emulator.url}/v1{path}", json=body, headers={"Authorization": "Bearer readonly-key"}
    )
    assert response.status_code == 403
    assert scope in error_message(response)
    # Nothing was applied.
    assert attentive_emulator.client.attributes() == {}
    assert attentive_emulator.client.subscriptions() == {}


def test_me_needs_no_scope_and_reports_company(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.add_key("other-key-1234", scopes=[], company_name="Demo Co")
    response = httpx.get(f"{attentive_emulator.url}/v1/me", headers={"Authorization": "Bearer other-key-1234"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"applicationName", "attentiveDomainName", "companyName", "contactEmail", "companyId"}
    assert body["companyName"] == "Demo Co"
    readonly = httpx.get(f"{attentive_emulator.url}/v1/me", headers={"Authorization": "Bearer readonly-key"})
    assert readonly.status_code == 200
    assert readonly.json()["companyName"] == "Emulated Co"


def test_removed_key_is_401(attentive_emulator: Emulator) -> None:
    client = attentive_emulator.client
    client.add_key("temp-key-9999")
    url = f"{attentive_emulator.url}/v1/me"
    assert httpx.get(url, headers={"Authorization": "Bearer temp-key-9999"}).status_code == 200
    assert client.remove_key("temp-key-9999") is True
    assert httpx.get(url, headers={"Authorization": "Bearer temp-key-9999"}).status_code == 401


def test_attributes_success(api: httpx.Client, attentive_emulator: Emulator) -> None:
    response = api.post("/attributes/custom", json=ATTRIBUTES)
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["x-ratelimit-limit"] == "150"
    assert response.headers["x-ratelimit-remaining"] == "149"
    api.post("/attributes/custom", json={"properties": {"age": "25", "city": "SF"}, "user": {"phone": PHONE}})
    assert attentive_emulator.client.attributes() == {PHONE: {"age": "25", "VIP": True, "city": "SF"}}
    read = api.get("/attributes/custom", params={"phone": PHONE})
    assert read.status_code == 200
    assert {"name": "city", "value": "SF"} in read.json()


def test_attribute_records_keyed_by_email_then_client_user_id(api: httpx.Client, attentive_emulator: Emulator) -> None:
    api.post("/attributes/custom", json={"properties": {"a": 1}, "user": {"email": EMAIL}})
    api.post(
        "/attributes/custom",
        json={"properties": {"b": 2}, "user": {"externalIdentifiers": {"clientUserId": "u-7"}}},
    )
    assert attentive_emulator.client.attributes() == {EMAIL: {"a": 1}, "clientUserId:u-7": {"b": 2}}


def test_events_success_and_nested_properties(api: httpx.Client, attentive_emulator: Emulator) -> None:
    body = {
        **EVENT,
        "properties": {"products": ["p1", "p2"], "shipment": {"carrier": "fedex", "ids": [1, {"x": 2}]}},
        "externalEventId": "e-1",
        "occurredAt": "2021-03-30T14:38:29.000Z",
    }
    response = api.post("/events/custom", json=body)
    assert response.status_code == 200
    assert response.json() == {}
    events = attentive_emulator.client.events()
    assert len(events) == 1
    assert events[0]["body"] == body
    assert isinstance(events[0]["received_at"], float)


def test_subscribe_success_shape(api: httpx.Client) -> None:
    response = api.post(
        "/subscriptions",
        json={**SUBSCRIBE, "user": {"phone": PHONE, "email": EMAIL}, "externalIdentifiers": {"clientUserId": "u1"}},
    )
    assert response.status_code == 202
    assert response.json() == {
        "user": {"phone": PHONE, "email": EMAIL},
        "externalIdentifiers": {"clientUserId": "u1"},
        "subscriptionResponses": [
            {"subscription": {"type": "MARKETING", "channel": "TEXT"}, "subscriptionCreationStatus": "NEWLY_CREATED"},
            {"subscription": {"type": "MARKETING", "channel": "EMAIL"}, "subscriptionCreationStatus": "NEWLY_CREATED"},
        ],
    }


def test_subscribe_locale_variant_uses_subscription_type(api: httpx.Client) -> None:
    response = api.post(
        "/subscriptions",
        json={
            "user": {"phone": PHONE},
            "locale": {"language": "en", "country": "US"},
            "subscriptionType": "TRANSACTIONAL",
        },
    )
    assert response.status_code == 202
    assert response.json()["subscriptionResponses"][0]["subscription"] == {"type": "TRANSACTIONAL", "channel": "TEXT"}


def test_sign_up_source_map_sets_type(api: httpx.Client, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_sign_up(sources={"777": "TRANSACTIONAL"})
    response = api.post("/subscriptions", json={"user": {"email": EMAIL}, "signUpSourceId": "777"})
    assert response.json()["subscriptionResponses"] == [
        {"subscription": {"type": "TRANSACTIONAL", "channel": "EMAIL"}, "subscriptionCreationStatus": "NEWLY_CREATED"}
    ]


def test_unsubscribe_success_shape(api: httpx.Client) -> None:
    api.post("/subscriptions", json={**SUBSCRIBE, "user": {"phone": PHONE, "email": EMAIL}})
    response = api.post(
        "/subscriptions/unsubscribe",
        json={"user": {"phone": PHONE, "email": EMAIL}, "subscriptions": [{"type": "MARKETING", "channel": "TEXT"}]},
    )
    assert response.status_code == 202
    # Email given, but only a TEXT subscription was asked for: email subscriptions are untouched.
    assert response.json() == {
        "user": {"phone": PHONE, "email": EMAIL},
        "subscriptionResponses": [
            {
                "subscription": {"type": "MARKETING", "channel": "TEXT"},
                "subscriptionUnsubscribeStatus": "NEWLY_UNSUBSCRIBED",
            }
        ],
    }


def test_identity_success_is_202_empty(api: httpx.Client, attentive_emulator: Emulator) -> None:
    body = {"email": EMAIL, "clientUserId": "123", "customIdentifiers": [{"name": "loyaltyId", "value": "1"}]}
    response = api.post("/identity-resolution/user-identifiers", json=body)
    assert response.status_code == 202
    assert response.content == b""
    assert response.headers["x-ratelimit-limit"] == "10"
    assert attentive_emulator.client.identities()[0]["body"] == body


def test_eligibility_reflects_current_subscription(api: httpx.Client) -> None:
    def eligible(**params: str) -> dict[tuple[str, str], bool]:
        response = api.get("/subscriptions", params=params)
        assert response.status_code == 200
        return {
            (e["subscription"]["type"], e["subscription"]["channel"]): e["eligibility"]["isEligible"]
            for e in response.json()["subscriptionEligibilities"]
        }

    assert eligible(phone=PHONE) == {("MARKETING", "TEXT"): False, ("TRANSACTIONAL", "TEXT"): False}
    api.post("/subscriptions", json=SUBSCRIBE)
    assert eligible(phone=PHONE)[("MARKETING", "TEXT")] is True
    assert eligible(email=EMAIL)[("MARKETING", "EMAIL")] is False
    api.post("/subscriptions/unsubscribe", json={"user": {"phone": PHONE}})
    assert eligible(phone=PHONE)[("MARKETING", "TEXT")] is False


@pytest.mark.parametrize("query", ["", f"?phone=%2B{PHONE[1:]}&email={EMAIL}"])
def test_eligibility_needs_exactly_one_identifier(api: httpx.Client, query: str) -> None:
    response = api.get(f"/subscriptions{query}")
    assert response.status_code == 400
    assert "exactly one" in error_message(response)


def test_unencoded_plus_in_query_is_rejected(api: httpx.Client) -> None:
    response = api.get(f"/subscriptions?phone={PHONE}")  # '+' decodes to a space
    assert response.status_code == 400
    assert "%2B" in error_message(response)


def test_unknown_path_and_wrong_method(api: httpx.Client, attentive_emulator: Emulator) -> None:
    response = api.get("/nope")
    assert response.status_code == 404
    error_message(response)
    assert httpx.get(f"{attentive_emulator.url}/elsewhere").status_code == 404
    wrong = api.delete("/events/custom")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b""])
def test_malformed_or_missing_json_is_400(api: httpx.Client, raw: bytes) -> None:
    response = api.post("/attributes/custom", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    message = error_message(response)
    assert "JSON" in message or "required" in message


def test_request_log_masks_keys(api: httpx.Client, attentive_emulator: Emulator) -> None:
    api.post("/attributes/custom", json=ATTRIBUTES)
    api.get("/me")
    log = attentive_emulator.client.requests(endpoint="attributes")
    assert len(log) == 1
    assert log[0]["status"] == 200
    assert log[0]["method"] == "POST"
    assert log[0]["body"] == ATTRIBUTES
    assert log[0]["key"] == "****-key"
    everything = attentive_emulator.client.requests()
    assert [e["endpoint"] for e in everything] == ["attributes", "me"]
    assert "test-key" not in httpx.get(f"{attentive_emulator.url}/_emulator/keys").text


def test_reset_clears_data_but_keeps_keys(api: httpx.Client, attentive_emulator: Emulator) -> None:
    client = attentive_emulator.client
    client.add_key("kept-key-0000")
    api.post("/attributes/custom", json=ATTRIBUTES)
    api.post("/subscriptions", json=SUBSCRIBE)
    client.set_limits({"attributes": 3})
    client.set_faults(latency_ms=5)
    client.reset()
    assert client.attributes() == {}
    assert client.subscriptions() == {}
    assert client.messages() == []
    assert client.requests() == []
    assert client.stats()["endpoints"]["attributes"]["requests"] == 0
    assert client.limits()["attributes"] == 150
    assert httpx.get(f"{attentive_emulator.url}/_emulator/faults").json()["latency_ms"] == 0
    assert (
        httpx.get(f"{attentive_emulator.url}/v1/me", headers={"Authorization": "Bearer kept-key-0000"}).status_code
        == 200
    )


def test_public_api_exports() -> None:
    from airflow_provider_attentive.emulator import ALL_SCOPES, EmulatorClient, KeySpec

    assert set(ALL_SCOPES) == {
        "attributes:write",
        "events:write",
        "subscriptions:write",
        "subscriptions:read",
        "identity:write",
        "segments:read",
        "segments:write",
    }
    assert KeySpec(scopes=ALL_SCOPES).scopes == frozenset(ALL_SCOPES)
    with pytest.raises(TypeError):
        KeySpec(scopes="attributes:write")
    with EmulatorClient("http://127.0.0.1:1/") as client:
        assert client.url == "http://127.0.0.1:1"
