"""Every documented validation rule answers 400 with a specific message (and applies nothing)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from airflow_provider_attentive.emulator import Emulator
from tests.helpers.emulator import EMAIL, PHONE, error_message

USER = {"phone": PHONE}
ATTR = "/attributes/custom"
EVENTS = "/events/custom"
SUBS = "/subscriptions"
UNSUB = "/subscriptions/unsubscribe"
IDENTITY = "/identity-resolution/user-identifiers"

# (id, path, body, substring expected in the error message)
INVALID: list[tuple[str, str, Any, str]] = [
    # OpenAPI schema: required fields, types, EventUser additionalProperties/minProperties
    ("attr-missing-user", ATTR, {"properties": {"a": "1"}}, "'user' is a required property"),
    ("attr-missing-properties", ATTR, {"user": USER}, "'properties' is a required property"),
    ("event-missing-type", EVENTS, {"user": USER}, "'type' is a required property"),
    ("subscribe-missing-user", SUBS, {"signUpSourceId": "1"}, "'user' is a required property"),
    ("unsubscribe-missing-user", UNSUB, {}, "'user' is a required property"),
    ("attr-properties-not-object", ATTR, {"properties": [], "user": USER}, "is not of type 'object'"),
    ("attr-phone-not-string", ATTR, {"properties": {}, "user": {"phone": 14155550100}}, "is not of type 'string'"),
    ("attr-null-email", ATTR, {"properties": {}, "user": {"email": None}}, "None is not of type 'string'"),
    ("attr-empty-user", ATTR, {"properties": {}, "user": {}}, "should be non-empty"),
    ("attr-unknown-user-key", ATTR, {"properties": {}, "user": {"phone": PHONE, "id": 1}}, "'id' was unexpected"),
    ("event-unknown-user-key", EVENTS, {"type": "t", "user": {"email": EMAIL, "name": "x"}}, "'name' was unexpected"),
    (
        "subscribe-bad-type-enum",
        SUBS,
        {"user": USER, "locale": {"language": "en", "country": "US"}, "subscriptionType": "PROMO"},
        "is not one of",
    ),
    (
        "identity-custom-id-needs-value",
        IDENTITY,
        {"email": EMAIL, "customIdentifiers": [{"name": "x"}]},
        "'value' is a required property",
    ),
    ("body-not-object", EVENTS, [1, 2], "is not of type 'object'"),
    # phones must be E.164
    ("attr-phone-no-plus", ATTR, {"properties": {}, "user": {"phone": "14155550100"}}, "E.164"),
    ("event-phone-dashes", EVENTS, {"type": "t", "user": {"phone": "+1-415-555-0100"}}, "E.164"),
    ("subscribe-phone-spaces", SUBS, {"user": {"phone": "+1 415 555 0100"}, "signUpSourceId": "1"}, "E.164"),
    ("unsubscribe-phone-leading-zero", UNSUB, {"user": {"phone": "+0123"}}, "E.164"),
    ("identity-phone-too-long", IDENTITY, {"phone": "+1234567890123456", "email": EMAIL}, "E.164"),
    ("phone-trailing-newline", ATTR, {"properties": {}, "user": {"phone": PHONE + "\n"}}, "E.164"),
    # user object needs an identifier
    (
        "attr-user-only-empty-external",
        ATTR,
        {"properties": {}, "user": {"externalIdentifiers": {}}},
        "must include phone, email or externalIdentifiers",
    ),
    ("subscribe-user-no-phone-or-email", SUBS, {"user": {}, "signUpSourceId": "1"}, "must include phone or email"),
    ("unsubscribe-user-no-phone-or-email", UNSUB, {"user": {}}, "must include phone or email"),
    # attributes
    ("attr-array-value", ATTR, {"properties": {"cities": ["chicago", "new york"]}, "user": USER}, "cannot be arrays"),
    ("attr-object-value", ATTR, {"properties": {"city": {"name": "Boston"}}, "user": USER}, "cannot be objects"),
    ("attr-name-too-long", ATTR, {"properties": {"x" * 201: "1"}, "user": USER}, "maximum is 200"),
    # events
    *[
        (f"event-type-forbidden-{c!r}", EVENTS, {"type": f"Order{c}Shipped", "user": USER}, "forbidden character")
        for c in "\"'(){}[]\\|,"
    ],
    *[
        (
            f"event-key-forbidden-{c!r}",
            EVENTS,
            {"type": "ok", "properties": {f"a{c}b": 1}, "user": USER},
            "forbidden character",
        )
        for c in '"{}[]\\|'
    ],
    (
        "event-occurred-at-no-offset",
        EVENTS,
        {"type": "t", "occurredAt": "2021-03-30T14:38:29", "user": USER},
        "RFC 3339",
    ),
    ("event-occurred-at-date-only", EVENTS, {"type": "t", "occurredAt": "2021-03-30", "user": USER}, "RFC 3339"),
    ("event-occurred-at-garbage", EVENTS, {"type": "t", "occurredAt": "yesterday", "user": USER}, "RFC 3339"),
    (
        "event-occurred-at-bad-month",
        EVENTS,
        {"type": "t", "occurredAt": "2021-13-30T14:38:29Z", "user": USER},
        "RFC 3339",
    ),
    # subscribe
    ("subscribe-no-source-no-locale", SUBS, {"user": USER}, "signUpSourceId is required"),
    (
        "subscribe-locale-without-type",
        SUBS,
        {"user": USER, "locale": {"language": "en", "country": "US"}},
        "subscriptionType is required",
    ),
    ("subscribe-type-without-locale", SUBS, {"user": USER, "subscriptionType": "MARKETING"}, "locale is required"),
    (
        "subscribe-unknown-locale",
        SUBS,
        {"user": USER, "locale": {"language": "fr", "country": "CA"}, "subscriptionType": "MARKETING"},
        "no API sign-up unit matches",
    ),
    (
        "subscribe-locale-case-sensitive",
        SUBS,
        {"user": USER, "locale": {"language": "EN", "country": "us"}, "subscriptionType": "MARKETING"},
        "no API sign-up unit matches",
    ),
    # identity
    ("identity-empty", IDENTITY, {}, "at least one identifier"),
    ("identity-client-user-id-alone", IDENTITY, {"clientUserId": "u1"}, "accompanied by another identifier"),
    ("identity-email-too-long", IDENTITY, {"email": "a" * 101, "phone": PHONE}, "100 character limit"),
]


@pytest.mark.parametrize(
    ("path", "body", "expected"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_requests_get_400_with_reason(
    api: httpx.Client, attentive_emulator: Emulator, path: str, body: Any, expected: str
) -> None:
    response = api.post(path, json=body)
    assert response.status_code == 400, response.text
    assert expected in error_message(response)
    # Rejected requests change nothing.
    client = attentive_emulator.client
    assert client.attributes() == {}
    assert client.events() == []
    assert client.subscriptions() == {}
    assert client.identities() == []


VALID: list[tuple[str, str, Any]] = [
    (
        "attr-scalar-values",
        ATTR,
        {"properties": {"n": 1, "f": 1.5, "b": False, "none": None, "x" * 200: "ok"}, "user": USER},
    ),
    (
        "attr-client-user-id-only",
        ATTR,
        {"properties": {"a": "1"}, "user": {"externalIdentifiers": {"clientUserId": "c"}}},
    ),
    (
        "attr-custom-identifier-only",
        ATTR,
        {"properties": {}, "user": {"externalIdentifiers": {"customIdentifiers": [{"name": "n", "value": "v"}]}}},
    ),
    ("attr-unknown-top-level-key-tolerated", ATTR, {"properties": {}, "user": USER, "extra": 1}),
    (
        "event-allowed-punctuation",
        EVENTS,
        {"type": "Order Shipped - v2: #1!", "properties": {"it's (ok), fine": 1}, "user": USER},
    ),
    (
        "event-offset-occurred-at",
        EVENTS,
        {"type": "t", "occurredAt": "2021-03-30T14:38:29.123456789+05:30", "user": USER},
    ),
    ("event-old-occurred-at", EVENTS, {"type": "t", "occurredAt": "1999-01-01T00:00:00Z", "user": USER}),
    ("subscribe-email-only", SUBS, {"user": {"email": EMAIL}, "signUpSourceId": "1"}),
    ("unsubscribe-nobody-known", UNSUB, {"user": {"email": EMAIL}}),
    ("identity-two-identifiers", IDENTITY, {"clientUserId": "u1", "customIdentifiers": [{"name": "n", "value": "v"}]}),
]


@pytest.mark.parametrize(("path", "body"), [case[1:] for case in VALID], ids=[case[0] for case in VALID])
def test_valid_edge_cases_are_accepted(api: httpx.Client, path: str, body: Any) -> None:
    response = api.post(path, json=body)
    assert response.status_code in (200, 202), response.text


def test_multiple_matching_sign_up_units_is_400(api: httpx.Client, attentive_emulator: Emulator) -> None:
    unit = {"language": "en", "country": "GB", "subscriptionType": "MARKETING"}
    attentive_emulator.client.set_sign_up(units=[{**unit, "id": "a"}, {**unit, "id": "b"}])
    response = api.post(
        SUBS, json={"user": USER, "locale": {"language": "en", "country": "GB"}, "subscriptionType": "MARKETING"}
    )
    assert response.status_code == 400
    assert "exactly one must match" in error_message(response)
