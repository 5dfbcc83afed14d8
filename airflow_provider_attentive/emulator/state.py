"""The emulated Attentive data and the business rules that change it.

Everything here is synchronous and free of I/O so it can be unit tested and so the server can
call it from its single event-loop thread without locks. Field checks live in :mod:`.validation`;
each operation here applies Attentive's documented behaviour (repeat subscribes, opt-outs,
duplicate events, confirmation texts) and returns ``(status, body)``.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .endpoints import ENDPOINT_NAMES
from .errors import ApiError
from .faults import FAULT_KINDS
from .jobs import JobSettings, JobStore
from .keys import KeySpec
from .limits import DEFAULT_LIMITS, EndpointRateLimit, WindowTracker, validate_limits
from .segments import SegmentStore
from .validation import (
    check_attribute_properties,
    check_event,
    check_event_user,
    check_identity,
    check_phone,
    check_subscription_user,
    check_unsubscribe_items,
    single_query_identifier,
    validate_sign_up_sources,
    validate_sign_up_units,
)

__all__ = [
    "DEFAULT_SIGN_UP_UNITS",
    "OPTED_OUT_MESSAGE",
    "REQUEST_LOG_SIZE",
    "EmulatorState",
    "EndpointStats",
    "user_key",
]

OPTED_OUT_MESSAGE = "subscriber has opted out and cannot be re-subscribed through the API"

DEFAULT_SIGN_UP_UNITS: tuple[dict[str, str], ...] = (
    {"id": "emulator-en-US-marketing", "language": "en", "country": "US", "subscriptionType": "MARKETING"},
    {
        "id": "emulator-en-US-transactional",
        "language": "en",
        "country": "US",
        "subscriptionType": "TRANSACTIONAL",
    },
)


class EndpointStats:
    """Counters for one endpoint."""

    __slots__ = ("accepted", "arrivals", "faults", "rate_limited", "requests", "status")

    def __init__(self) -> None:
        self.requests = 0
        self.status: Counter[int] = Counter()
        self.rate_limited = 0
        self.faults: Counter[str] = Counter()
        self.arrivals = WindowTracker()
        self.accepted = WindowTracker()

    def to_dict(self, limit: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "status": {str(code): n for code, n in sorted(self.status.items())},
            "rate_limited": self.rate_limited,
            "max_window": self.accepted.max,
            "max_window_all": self.arrivals.max,
            "limit": limit,
            "faults": {kind: self.faults.get(kind, 0) for kind in FAULT_KINDS},
        }


def user_key(user: Mapping[str, Any]) -> str:
    """Record key for a user: phone, else email, else clientUserId, else first custom identifier."""
    if user.get("phone"):
        return str(user["phone"])
    if user.get("email"):
        return str(user["email"])
    ext = user.get("externalIdentifiers") or {}
    if ext.get("clientUserId"):
        return f"clientUserId:{ext['clientUserId']}"
    first = (ext.get("customIdentifiers") or [{}])[0]
    return f"{first.get('name')}:{first.get('value')}"


REQUEST_LOG_SIZE = 100_000


@dataclass
class _Subscription:
    channel: str
    subscribed: bool
    sign_up_source_id: str | None
    subscribe_requests: int = 0
    unsubscribe_requests: int = 0
    updated_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "subscribed": self.subscribed,
            "sign_up_source_id": self.sign_up_source_id,
            "subscribe_requests": self.subscribe_requests,
            "unsubscribe_requests": self.unsubscribe_requests,
            "updated_at": self.updated_at,
        }


class EmulatorState:
    """All emulated Attentive data plus the configuration that ``reset`` restores.

    Not thread-safe by design: the server only touches it from its event-loop thread.
    """

    def __init__(
        self,
        keys: Mapping[str, KeySpec] | None = None,
        limits: Mapping[str, int] | None = None,
        sign_up_sources: Mapping[str, str] | None = None,
        sign_up_units: Iterable[Mapping[str, str]] | None = None,
        job_settings: JobSettings | None = None,
    ) -> None:
        self.keys: dict[str, KeySpec] = dict(keys or {})
        # v2 bulk jobs and segments keep their own rules in their own modules.
        self.jobs = JobStore(job_settings)
        self._initial_limits = dict(DEFAULT_LIMITS)
        if limits:
            self._initial_limits.update(validate_limits(limits, self._initial_limits))
        self._initial_sources = validate_sign_up_sources(sign_up_sources or {})
        self._initial_units = validate_sign_up_units(
            sign_up_units if sign_up_units is not None else DEFAULT_SIGN_UP_UNITS
        )
        self.limiter = EndpointRateLimit(self._initial_limits)
        self.reset()

    # -- lifecycle --------------------------------------------------------------------------

    def reset(self) -> None:
        """Clear data, stats, jobs and rate-limit windows; restore limits, job settings and sign-up config; keep keys."""
        self.limiter.limits = dict(self._initial_limits)
        self.limiter.clear()
        self.sign_up_sources: dict[str, str] = dict(self._initial_sources)
        self.sign_up_units: list[dict[str, str]] = [dict(u) for u in self._initial_units]
        self.attributes: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._event_ids: set[str] = set()
        self.subscriptions: dict[str, dict[str, _Subscription]] = {}
        self.messages: list[dict[str, Any]] = []
        self.identities: list[dict[str, Any]] = []
        self.opted_out: set[str] = set()
        # UI-created enumerated attributes accept only their defined values (Attentive docs, custom attributes).
        self.enumerated_attributes: dict[str, list[Any]] = {}
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.endpoint_stats: dict[str, EndpointStats] = {name: EndpointStats() for name in ENDPOINT_NAMES}
        self.not_found = 0
        self.repeat_subscribes = 0
        self.repeat_unsubscribes = 0
        self.duplicate_events = 0
        self.jobs.reset()
        self.segments = SegmentStore()
        self.bulk_users_with_subscriptions = 0

    # -- configuration ----------------------------------------------------------------------

    def add_key(self, key: str, spec: KeySpec) -> None:
        if not key:
            raise ValueError("key must be a non-empty string")
        self.keys[key] = spec

    def remove_key(self, key: str) -> bool:
        return self.keys.pop(key, None) is not None

    def set_limits(self, limits: Mapping[str, int]) -> dict[str, int]:
        self.limiter.limits.update(validate_limits(limits, self.limiter.limits))
        return dict(self.limiter.limits)

    def set_enumerated_attributes(self, attributes: Mapping[str, Any]) -> dict[str, list[Any]]:
        for name, values in attributes.items():
            if not isinstance(name, str) or not isinstance(values, list):
                raise ValueError("enumerated attributes must be {name: [allowed values]}")
        self.enumerated_attributes.update({name: list(values) for name, values in attributes.items()})
        return dict(self.enumerated_attributes)

    def seed_opted_out(self, phones: Iterable[str]) -> None:
        for phone in phones:
            check_phone(phone, "opted-out phone")
            self.opted_out.add(phone)

    # -- inspection -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "endpoints": {name: st.to_dict(self.limiter.limit(name)) for name, st in self.endpoint_stats.items()},
            "not_found": self.not_found,
            "repeat_subscribes": self.repeat_subscribes,
            "repeat_unsubscribes": self.repeat_unsubscribes,
            "duplicate_events": self.duplicate_events,
            "events_stored": len(self.events),
            "messages_sent": len(self.messages),
            "bulk_jobs": len(self.jobs.jobs),
            "bulk_users_with_subscriptions": self.bulk_users_with_subscriptions,
        }

    def subscriptions_dict(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {
            ident: {stype: sub.to_dict() for stype, sub in subs.items()} for ident, subs in self.subscriptions.items()
        }

    # -- API operations ---------------------------------------------------------------------
    # Each handler applies the documented rules, mutates state and returns (status, body).
    # The OpenAPI schema has already been checked by the caller.

    def post_attributes(self, body: dict[str, Any]) -> tuple[int, Any]:
        user = body["user"]
        check_event_user(user)
        props = body["properties"]
        check_attribute_properties(props, self.enumerated_attributes)
        self.attributes.setdefault(user_key(user), {}).update(props)
        return 200, {}

    def get_attributes(self, phone: str | None, email: str | None) -> tuple[int, Any]:
        ident = single_query_identifier(phone, email)
        record = self.attributes.get(ident, {})
        return 200, [{"name": k, "value": v} for k, v in record.items()]

    def post_event(self, body: dict[str, Any], received_at: float) -> tuple[int, Any]:
        check_event(body)
        event_id = body.get("externalEventId")
        if event_id is not None:
            if event_id in self._event_ids:
                # Attentive treats externalEventId as the event's unique id: accept, do not re-store.
                self.duplicate_events += 1
                return 200, {}
            self._event_ids.add(event_id)
        self.events.append({"received_at": received_at, "body": body})
        return 200, {}

    def _subscription_type(self, body: Mapping[str, Any]) -> tuple[str, str | None]:
        source = body.get("signUpSourceId")
        if source:
            return self.sign_up_sources.get(source, "MARKETING"), source
        locale = body.get("locale")
        stype = body.get("subscriptionType")
        if locale is None and stype is None:
            raise ApiError(400, "signUpSourceId is required unless both locale and subscriptionType are given")
        if locale is None or stype is None:
            missing = "subscriptionType" if locale is not None else "locale"
            raise ApiError(400, f"{missing} is required when signUpSourceId is not given")
        language, country = locale.get("language"), locale.get("country")
        if not language or not country:
            raise ApiError(400, "locale needs both language (e.g. 'en') and country (e.g. 'US')")
        matches = [
            u
            for u in self.sign_up_units
            if u["language"] == language and u["country"] == country and u["subscriptionType"] == stype
        ]
        if not matches:
            raise ApiError(
                400, f"no API sign-up unit matches locale {language}-{country} with subscriptionType {stype}"
            )
        if len(matches) > 1:
            raise ApiError(
                400,
                f"{len(matches)} API sign-up units match locale {language}-{country} with "
                f"subscriptionType {stype}; exactly one must match",
            )
        return stype, matches[0].get("id")

    def post_subscribe(self, body: dict[str, Any], company: str) -> tuple[int, Any]:
        phone, email = check_subscription_user(body["user"])
        stype, source = self._subscription_type(body)
        if phone and phone in self.opted_out:
            raise ApiError(400, OPTED_OUT_MESSAGE)
        single_opt_in = bool(body.get("singleOptIn"))
        responses = []
        now = time.time()
        for channel, ident in (("TEXT", phone), ("EMAIL", email)):
            if not ident:
                continue
            subs = self.subscriptions.setdefault(ident, {})
            sub = subs.get(stype)
            if sub is not None and sub.subscribed:
                status = "PREVIOUSLY_CREATED"
                self.repeat_subscribes += 1
                if channel == "TEXT":
                    self._message(channel, ident, "already_subscribed", stype, company, now)
            else:
                status = "NEWLY_CREATED"
                if sub is None:
                    sub = subs[stype] = _Subscription(channel, True, source)
                sub.subscribed = True
                sub.sign_up_source_id = source
                if channel == "TEXT" and not single_opt_in:
                    self._message(channel, ident, "opt_in_confirmation", stype, company, now)
            sub.subscribe_requests += 1
            sub.updated_at = now
            responses.append(
                {"subscription": {"type": stype, "channel": channel}, "subscriptionCreationStatus": status}
            )
        result: dict[str, Any] = {"user": _user_echo(phone, email)}
        if body.get("externalIdentifiers") is not None:
            result["externalIdentifiers"] = body["externalIdentifiers"]
        result["subscriptionResponses"] = responses
        return 202, result

    def post_unsubscribe(self, body: dict[str, Any], company: str) -> tuple[int, Any]:
        phone, email = check_subscription_user(body["user"])
        wanted = body.get("subscriptions")
        check_unsubscribe_items(wanted)
        notify = not bool((body.get("notification") or {}).get("disabled"))
        responses = []
        now = time.time()
        for channel, ident in (("TEXT", phone), ("EMAIL", email)):
            if not ident:
                continue
            subs = self.subscriptions.get(ident, {})
            # No list means "everything this identifier has" on its own channel.
            types = list(subs) if wanted is None else [i["type"] for i in wanted if i["channel"] == channel]
            touched = False
            for stype in dict.fromkeys(types):
                sub = subs.get(stype)
                if sub is None:
                    # Only existing subscriptions appear in Attentive's answer.
                    continue
                if sub.subscribed:
                    status = "NEWLY_UNSUBSCRIBED"
                    sub.subscribed = False
                else:
                    status = "PREVIOUSLY_UNSUBSCRIBED"
                    self.repeat_unsubscribes += 1
                sub.unsubscribe_requests += 1
                sub.updated_at = now
                touched = True
                responses.append(
                    {
                        "subscription": {"type": stype, "channel": channel},
                        "subscriptionUnsubscribeStatus": status,
                    }
                )
            if touched and channel == "TEXT" and notify:
                self._message(channel, ident, "unsubscribed", None, company, now)
        return 202, {"user": _user_echo(phone, email), "subscriptionResponses": responses}

    def get_subscriptions(self, phone: str | None, email: str | None) -> tuple[int, Any]:
        ident = single_query_identifier(phone, email)
        channel = "TEXT" if phone is not None else "EMAIL"
        subs = self.subscriptions.get(ident, {})
        types = ["MARKETING", "TRANSACTIONAL", *[t for t in subs if t not in ("MARKETING", "TRANSACTIONAL")]]
        return 200, {
            "subscriptionEligibilities": [
                {
                    "subscription": {"type": stype, "channel": channel},
                    "eligibility": {"isEligible": bool(subs.get(stype) and subs[stype].subscribed)},
                }
                for stype in types
            ]
        }

    def post_identity(self, body: dict[str, Any], received_at: float) -> tuple[int, Any]:
        check_identity(body)
        self.identities.append({"received_at": received_at, "body": body})
        return 202, None

    # -- helpers ----------------------------------------------------------------------------

    def _message(self, channel: str, to: str, kind: str, stype: str | None, company: str, now: float) -> None:
        kind_label = (stype or "").lower()
        text = {
            "opt_in_confirmation": f"{company}: Reply Y to confirm your subscription to {kind_label} "
            "messages. Msg & data rates may apply. Reply STOP to cancel.",
            "already_subscribed": f"{company}: You are already subscribed to {kind_label} messages. "
            "Reply STOP to cancel.",
            "unsubscribed": f"{company}: You have been unsubscribed and will no longer receive messages.",
        }[kind]
        self.messages.append(
            {"channel": channel, "to": to, "kind": kind, "subscription_type": stype, "text": text, "sent_at": now}
        )


def _user_echo(phone: str | None, email: str | None) -> dict[str, str]:
    user = {}
    if phone:
        user["phone"] = phone
    if email:
        user["email"] = email
    return user
