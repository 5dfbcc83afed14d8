"""Attentive's documented field rules, checked on top of the OpenAPI schema (which the caller has applied).

Each check raises :class:`~.errors.ApiError` (400) with a message naming the field and the rule;
where Attentive does not document a behaviour the emulator picks the strict option so connector
bugs surface locally. The sign-up checks validate emulator configuration and raise ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from .errors import ApiError

__all__ = [
    "EVENT_PROPERTY_KEY_FORBIDDEN",
    "EVENT_TYPE_FORBIDDEN",
    "MAX_ATTRIBUTE_NAME",
    "MAX_IDENTIFIER_LEN",
    "SUBSCRIPTION_TYPES",
    "bulk_user_key",
    "check_attribute_properties",
    "check_event",
    "check_event_user",
    "check_identity",
    "check_known_settings",
    "check_non_negative",
    "check_phone",
    "check_shares",
    "check_subscription_user",
    "check_unsubscribe_items",
    "is_e164",
    "parse_rfc3339",
    "segment_member_key",
    "single_query_identifier",
    "validate_sign_up_sources",
    "validate_sign_up_units",
]

SUBSCRIPTION_TYPES: tuple[str, ...] = ("MARKETING", "TRANSACTIONAL", "CHECKOUT_ABANDONED")

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# The OpenAPI ``format: email`` is not checked by the schema validator; this is the strict-enough shape.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<frac>[0-9]+))?(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
EVENT_TYPE_FORBIDDEN = frozenset("\"'(){}[]\\|,")
EVENT_PROPERTY_KEY_FORBIDDEN = frozenset('"{}[]\\|')
MAX_ATTRIBUTE_NAME = 200
MAX_IDENTIFIER_LEN = 100
_IDENTIFIER_FIELDS = ("phone", "email", "shopifyId", "klaviyoId", "clientUserId")


def is_e164(value: object) -> bool:
    return isinstance(value, str) and _E164.fullmatch(value) is not None


def check_phone(value: object, where: str) -> None:
    if not is_e164(value):
        hint = " (encode '+' as %2B in query strings)" if isinstance(value, str) and value[:1] == " " else ""
        raise ApiError(400, f"{where} must be an E.164 phone number like +13115552368, got {value!r}{hint}")


def parse_rfc3339(value: str) -> datetime | None:
    """Parse an RFC 3339 date-time that carries an explicit offset; None when invalid."""
    m = _RFC3339.fullmatch(value)
    if m is None:
        return None
    frac = (m["frac"] or "")[:6].ljust(6, "0")
    offset = "+00:00" if m["offset"] in ("Z", "z") else m["offset"]
    try:
        return datetime.fromisoformat(f"{m['date']}T{m['time']}.{frac}{offset}")
    except ValueError:
        return None


# -- users and query identifiers ------------------------------------------------------------


def check_event_user(user: Mapping[str, Any]) -> None:
    """EventUser: phone, email or external identifiers; the schema already forbids unknown keys."""
    phone = user.get("phone")
    email = user.get("email")
    ext = user.get("externalIdentifiers") or {}
    has_ext = bool(ext.get("clientUserId")) or bool(ext.get("customIdentifiers"))
    if phone is None and not email and not has_ext:
        raise ApiError(400, "user must include phone, email or externalIdentifiers (clientUserId or customIdentifiers)")
    if phone is not None:
        check_phone(phone, "user.phone")
    if email is not None and not email:
        raise ApiError(400, "user.email must not be empty; omit the field instead")


def check_subscription_user(user: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """A subscribe/unsubscribe user: phone and/or email; returns them."""
    phone = user.get("phone")
    email = user.get("email")
    if not phone and not email:
        raise ApiError(400, "user must include phone or email")
    if phone is not None:
        check_phone(phone, "user.phone")
    if email is not None and not email:
        raise ApiError(400, "user.email must not be empty; omit the field instead")
    return phone, email


def single_query_identifier(phone: str | None, email: str | None) -> str:
    """The one identifier of a read (``?phone=`` or ``?email=``, never both)."""
    if (phone is None) == (email is None):
        raise ApiError(400, "include exactly one query parameter: phone or email")
    if phone is not None:
        check_phone(phone, "phone")
        return phone
    assert email is not None
    if not email:
        raise ApiError(400, "email must not be empty")
    return email


# -- request bodies -------------------------------------------------------------------------


def check_attribute_properties(props: Mapping[str, Any], enumerated: Mapping[str, list[Any]]) -> None:
    """Custom attribute names and values; ``enumerated`` holds the UI-created attributes' allowed values."""
    for name, value in props.items():
        if len(name) > MAX_ATTRIBUTE_NAME:
            raise ApiError(400, f"attribute name {name[:40]!r}... is {len(name)} characters; the maximum is 200")
        allowed = enumerated.get(name)
        if allowed is not None and value not in allowed:
            raise ApiError(
                400,
                f"attribute {name!r} is an enumerated attribute created in the Attentive UI; {value!r} is not "
                f"one of its values {allowed}",
            )
        if isinstance(value, (list, dict)):
            kind = "arrays" if isinstance(value, list) else "objects"
            raise ApiError(400, f"attribute {name!r}: custom attribute values cannot be {kind}")


def check_event(body: Mapping[str, Any]) -> None:
    """A custom event: its user, type, property keys and occurredAt."""
    check_event_user(body["user"])
    etype = body["type"]
    if not etype.strip():
        raise ApiError(400, "event type must not be empty")
    bad = sorted(set(etype) & EVENT_TYPE_FORBIDDEN)
    if bad:
        raise ApiError(
            400,
            f"event type {etype!r} contains forbidden character(s) {' '.join(bad)}; "
            "not allowed: \" ' ( ) { } [ ] \\ | ,",
        )
    for key in body.get("properties") or {}:
        bad = sorted(set(key) & EVENT_PROPERTY_KEY_FORBIDDEN)
        if bad:
            raise ApiError(
                400,
                f"event property key {key!r} contains forbidden character(s) {' '.join(bad)}; "
                'not allowed: " { } [ ] \\ |',
            )
    occurred = body.get("occurredAt")
    if occurred is not None and parse_rfc3339(occurred) is None:
        raise ApiError(
            400,
            f"occurredAt {occurred!r} is not an RFC 3339 date-time with a UTC offset (e.g. 2021-03-30T14:38:29.000Z)",
        )


def check_unsubscribe_items(wanted: Iterable[Mapping[str, Any]] | None) -> None:
    """The optional ``subscriptions`` list of an unsubscribe: each item names a type and a channel."""
    if wanted is None:
        return
    for i, item in enumerate(wanted):
        if not item.get("type") or not item.get("channel"):
            raise ApiError(400, f"subscriptions[{i}] needs both type and channel")


def check_identity(body: Mapping[str, Any]) -> None:
    """An identity-resolution request: identifier formats, lengths, and enough identifiers to link."""
    if body.get("phone") is not None:
        check_phone(body["phone"], "phone")
    for name in ("email", "shopifyId", "klaviyoId", "clientUserId"):
        value = body.get(name)
        if value is not None and len(value) > MAX_IDENTIFIER_LEN:
            raise ApiError(400, f"{name} exceeds the {MAX_IDENTIFIER_LEN} character limit")
        if value is not None and not value:
            raise ApiError(400, f"{name} must not be empty; omit the field instead")
    customs = body.get("customIdentifiers") or []
    for i, item in enumerate(customs):
        if len(item["value"]) > MAX_IDENTIFIER_LEN:
            raise ApiError(400, f"customIdentifiers[{i}].value exceeds the {MAX_IDENTIFIER_LEN} character limit")
    count = sum(1 for n in _IDENTIFIER_FIELDS if body.get(n)) + len(customs)
    if count == 0:
        raise ApiError(400, "at least one identifier (phone, email, shopifyId, klaviyoId, ...) is required")
    if (body.get("clientUserId") or customs) and count < 2:
        raise ApiError(400, "a clientUserId or custom identifier must be accompanied by another identifier")


# -- v2 identifiers: a bulk item's problems answer in its results line, not for the whole request ------


def _check_present(where: str, value: object) -> None:
    if isinstance(value, str) and not value.strip():
        raise ApiError(400, f"{where} must not be empty; omit the field instead")


def bulk_user_key(identifiers: Mapping[str, Any] | None) -> str:
    """The record key of a v2 bulk user's ``identifiers``, keyed as v1 keys its users (phone first)."""
    ids = identifiers or {}
    for name in ("phone", "email", "clientUserId", "shopifyId", "klaviyoId"):
        _check_present(f"identifiers.{name}", ids.get(name))
    phone = ids.get("phone")
    if phone is not None:
        check_phone(phone, "identifiers.phone")
    for name in ("email", "clientUserId", "shopifyId", "klaviyoId"):
        value = ids.get(name)
        if value is not None and len(value) > MAX_IDENTIFIER_LEN:
            raise ApiError(400, f"identifiers.{name} exceeds the {MAX_IDENTIFIER_LEN} character limit")
    customs = ids.get("customIdentifiers") or []
    for i, item in enumerate(customs):
        _check_present(f"identifiers.customIdentifiers[{i}].key", item["key"])
        _check_present(f"identifiers.customIdentifiers[{i}].value", item["value"])
    if phone:
        return str(phone)
    if ids.get("email"):
        return str(ids["email"])
    for name in ("clientUserId", "shopifyId", "klaviyoId"):
        if ids.get(name):
            return f"{name}:{ids[name]}"
    if customs:
        return f"{customs[0]['key']}:{customs[0]['value']}"
    raise ApiError(
        400, "user needs at least one identifier: phone, email, clientUserId, shopifyId, klaviyoId or customIdentifiers"
    )


def segment_member_key(member: Mapping[str, Any]) -> str:
    """The key a segment knows a member by: phone, else email, else clientUserId."""
    phone, email, client_user_id = member.get("phone"), member.get("email"), member.get("clientUserId")
    for name, value in (("phone", phone), ("email", email), ("clientUserId", client_user_id)):
        _check_present(name, value)
    if phone is not None:
        check_phone(phone, "phone")
    if email is not None and not _EMAIL.fullmatch(email):
        raise ApiError(400, f"email {email!r} is not an email address")
    if phone:
        return str(phone)
    if email:
        return str(email)
    if client_user_id:
        return f"clientUserId:{client_user_id}"
    raise ApiError(400, "member needs at least one identifier: phone, email or clientUserId")


# -- emulator configuration -----------------------------------------------------------------


def check_known_settings(data: Mapping[str, Any], known: Iterable[str], what: str) -> None:
    """Refuse setting names a configuration does not have, naming the ones it does."""
    names = sorted(known)
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown {what} setting(s): {', '.join(unknown)}; known: {names}")


def check_non_negative(config: object, names: Iterable[str]) -> None:
    """Each named attribute of ``config`` is a number >= 0 (booleans are not numbers here)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number")


def check_shares(config: object, names: Iterable[str], what: str) -> None:
    """Each named attribute of ``config`` is a share between 0 and 1, and together they are at most 1."""
    total = 0.0
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{name} must be a number between 0 and 1")
        total += value
    if total > 1 + 1e-9:
        raise ValueError(f"{what} sum to {total:.3f}; they must sum to at most 1")


def validate_sign_up_sources(sources: Mapping[str, Any]) -> dict[str, str]:
    """signUpSourceId -> subscription type. Raises ``ValueError``."""
    out: dict[str, str] = {}
    for source, stype in sources.items():
        if stype not in SUBSCRIPTION_TYPES:
            raise ValueError(f"sign-up source {source!r}: type must be one of {list(SUBSCRIPTION_TYPES)}")
        out[str(source)] = stype
    return out


def validate_sign_up_units(units: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """API sign-up units used to resolve the (locale, subscriptionType) subscribe variant."""
    out = []
    for i, unit in enumerate(units):
        missing = [k for k in ("language", "country", "subscriptionType") if not unit.get(k)]
        if missing:
            raise ValueError(f"sign-up unit {i} is missing {', '.join(missing)}")
        if unit["subscriptionType"] not in ("MARKETING", "TRANSACTIONAL"):
            raise ValueError(f"sign-up unit {i}: subscriptionType must be MARKETING or TRANSACTIONAL")
        out.append({"id": str(unit.get("id") or f"unit-{i}"), **{k: str(unit[k]) for k in unit if k != "id"}})
    return out
