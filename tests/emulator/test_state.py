"""Attentive's stateful behaviour: repeat subscribes, unsubscribes, messages, duplicate events."""

from __future__ import annotations

import httpx

from airflow_provider_attentive.emulator import Emulator
from tests.helpers.emulator import EMAIL, PHONE, error_message

SUBSCRIBE = {"user": {"phone": PHONE}, "signUpSourceId": "64140"}


def _statuses(response: httpx.Response, field: str) -> list[tuple[str, str, str]]:
    return [
        (r["subscription"]["type"], r["subscription"]["channel"], r[field])
        for r in response.json()["subscriptionResponses"]
    ]


def test_repeat_subscribe_is_previously_created_and_texts_again(
    api: httpx.Client, attentive_emulator: Emulator
) -> None:
    first = api.post("/subscriptions", json=SUBSCRIBE)
    second = api.post("/subscriptions", json=SUBSCRIBE)
    assert _statuses(first, "subscriptionCreationStatus") == [("MARKETING", "TEXT", "NEWLY_CREATED")]
    assert _statuses(second, "subscriptionCreationStatus") == [("MARKETING", "TEXT", "PREVIOUSLY_CREATED")]
    client = attentive_emulator.client
    assert client.stats()["repeat_subscribes"] == 1
    kinds = [(m["kind"], m["to"], m["channel"]) for m in client.messages()]
    assert kinds == [("opt_in_confirmation", PHONE, "TEXT"), ("already_subscribed", PHONE, "TEXT")]
    assert "already subscribed" in client.messages()[1]["text"]
    sub = client.subscriptions()[PHONE]["MARKETING"]
    assert sub["subscribed"] is True
    assert sub["subscribe_requests"] == 2


def test_single_opt_in_sends_no_confirmation_and_email_sends_no_text(
    api: httpx.Client, attentive_emulator: Emulator
) -> None:
    api.post("/subscriptions", json={**SUBSCRIBE, "singleOptIn": True})
    api.post("/subscriptions", json={"user": {"email": EMAIL}, "signUpSourceId": "1"})
    api.post("/subscriptions", json={"user": {"email": EMAIL}, "signUpSourceId": "1"})
    assert attentive_emulator.client.messages() == []
    assert attentive_emulator.client.stats()["repeat_subscribes"] == 1


def test_unsubscribe_then_repeat_and_resubscribe(api: httpx.Client, attentive_emulator: Emulator) -> None:
    api.post("/subscriptions", json={**SUBSCRIBE, "user": {"phone": PHONE, "email": EMAIL}})
    first = api.post("/subscriptions/unsubscribe", json={"user": {"phone": PHONE, "email": EMAIL}})
    assert _statuses(first, "subscriptionUnsubscribeStatus") == [
        ("MARKETING", "TEXT", "NEWLY_UNSUBSCRIBED"),
        ("MARKETING", "EMAIL", "NEWLY_UNSUBSCRIBED"),
    ]
    again = api.post("/subscriptions/unsubscribe", json={"user": {"phone": PHONE}})
    assert _statuses(again, "subscriptionUnsubscribeStatus") == [("MARKETING", "TEXT", "PREVIOUSLY_UNSUBSCRIBED")]
    client = attentive_emulator.client
    assert client.stats()["repeat_unsubscribes"] == 1
    assert [m["kind"] for m in client.messages()] == ["opt_in_confirmation", "unsubscribed", "unsubscribed"]
    resub = api.post("/subscriptions", json=SUBSCRIBE)
    assert _statuses(resub, "subscriptionCreationStatus") == [("MARKETING", "TEXT", "NEWLY_CREATED")]


def test_unsubscribe_only_touches_listed_and_existing_subscriptions(api: httpx.Client) -> None:
    api.post("/subscriptions", json=SUBSCRIBE)
    response = api.post(
        "/subscriptions/unsubscribe",
        json={
            "user": {"phone": PHONE},
            "subscriptions": [
                {"type": "TRANSACTIONAL", "channel": "TEXT"},  # never subscribed: not in the answer
                {"type": "MARKETING", "channel": "EMAIL"},  # email channel, but no email given
            ],
        },
    )
    assert response.status_code == 202
    assert response.json()["subscriptionResponses"] == []


def test_unsubscribe_with_notification_disabled_sends_no_message(
    api: httpx.Client, attentive_emulator: Emulator
) -> None:
    api.post("/subscriptions", json={**SUBSCRIBE, "singleOptIn": True})
    response = api.post(
        "/subscriptions/unsubscribe",
        json={"user": {"phone": PHONE}, "notification": {"language": "en-US", "disabled": True}},
    )
    assert _statuses(response, "subscriptionUnsubscribeStatus") == [("MARKETING", "TEXT", "NEWLY_UNSUBSCRIBED")]
    assert attentive_emulator.client.messages() == []


def test_opted_out_phone_cannot_be_resubscribed(api: httpx.Client, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.seed_opted_out([PHONE])
    response = api.post("/subscriptions", json={**SUBSCRIBE, "user": {"phone": PHONE, "email": EMAIL}})
    assert response.status_code == 400
    assert error_message(response) == "subscriber has opted out and cannot be re-subscribed through the API"
    assert attentive_emulator.client.subscriptions() == {}
    assert attentive_emulator.client.messages() == []


def test_duplicate_external_event_id_is_accepted_but_not_stored(
    api: httpx.Client, attentive_emulator: Emulator
) -> None:
    event = {"type": "Order Shipped", "externalEventId": "evt-1", "user": {"phone": PHONE}}
    assert api.post("/events/custom", json=event).status_code == 200
    assert api.post("/events/custom", json={**event, "properties": {"x": 1}}).status_code == 200
    assert api.post("/events/custom", json={**event, "externalEventId": "evt-2"}).status_code == 200
    no_id = {"type": "Viewed", "user": {"phone": PHONE}}
    api.post("/events/custom", json=no_id)
    api.post("/events/custom", json=no_id)  # without an id there is nothing to dedupe on
    client = attentive_emulator.client
    assert client.stats()["duplicate_events"] == 1
    assert [e["body"].get("externalEventId") for e in client.events()] == ["evt-1", "evt-2", None, None]
