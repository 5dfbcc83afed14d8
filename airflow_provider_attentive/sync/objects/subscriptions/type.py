"""Subscribers (Add / Remove / Mirror): how a row becomes a subscribe or an unsubscribe, keyed per person."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_attentive.client import EndpointName, Result
from airflow_provider_attentive.sync.errors import SyncConfigError
from airflow_provider_attentive.sync.object_type import (
    Answer,
    Invalid,
    ObjectType,
    Planned,
    Prepared,
    Run,
    guess_column,
    key_text,
    shown_columns,
)
from airflow_provider_attentive.sync.objects.subscriptions.answers import read_subscription_answer
from airflow_provider_attentive.sync.objects.subscriptions.phases import SubscriptionPhases
from airflow_provider_attentive.sync.state import KNOWN_MEMBERS, StateRow
from airflow_provider_attentive.sync.values import InvalidValue, normalize_email, normalize_phone

__all__ = ["SubscriptionsType"]

_LOCALE = re.compile(r"^([a-z]{2})[-_]([A-Z]{2})$")


class SubscriptionsType(ObjectType):
    """Subscribers (Add / Remove / Mirror): ``POST /v1/subscriptions`` and ``.../unsubscribe``."""

    object_type = "subscriptions"
    modes = ("add", "remove", "mirror")
    endpoint = EndpointName.SUBSCRIBE
    shared_key_counter = "shared_phones"

    def __init__(
        self,
        *,
        sign_up_source_id: str | None,
        locale: str | None,
        subscription_type: str,
        single_opt_in: bool,
        notify_on_unsubscribe: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if subscription_type not in ("MARKETING", "TRANSACTIONAL"):
            raise SyncConfigError(f"subscription_type must be MARKETING or TRANSACTIONAL, got {subscription_type!r}")
        if bool(sign_up_source_id) == bool(locale):
            raise SyncConfigError(
                "give exactly one of sign_up_source_id (from Attentive's Sign-up Units tab) or locale "
                "(e.g. 'en-US', with subscription_type)"
            )
        self.locale: dict[str, str] | None = None
        if locale:
            m = _LOCALE.match(locale)
            if not m:
                raise SyncConfigError(f"locale must look like 'en-US', got {locale!r}")
            self.locale = {"language": m.group(1), "country": m.group(2)}
        self.sign_up_source_id = str(sign_up_source_id) if sign_up_source_id else None
        self.subscription_type = subscription_type
        self.single_opt_in = bool(single_opt_in)
        self.notify_on_unsubscribe = bool(notify_on_unsubscribe)

    def fingerprint_extra(self) -> Any:
        return [self.sign_up_source_id, self.locale, self.subscription_type]

    # Membership is tracked per person, and Attentive knows a person by phone: keyed by the primary key,
    # a reformatted phone ("(415) 555-0111" then "+14155550111") would subscribe the person again and then
    # unsubscribe them as "left the model"; two customer rows sharing a phone would subscribe it twice, and a
    # customer whose phone changed would never have the new number subscribed. Keyed by the E.164 phone, all
    # three are right: one subscriber, and a changed number is one joining and one leaving.

    @property
    def key_index(self) -> int:
        return self.field_index["phone"]

    def key_from_value(self, value: Any) -> str | None:
        if value is None:
            return None
        try:
            return normalize_phone(value, self.default_region)
        except InvalidValue:
            return None

    def key_problem(self, row: Sequence[Any]) -> tuple[str | None, str]:
        pk = row[self.pk_index]
        shown = None if pk is None else key_text(pk)
        if shown is not None and self.pk_index == self.key_index:
            # The key is the unusable phone itself: too malformed for mask_key to see a phone, still private.
            shown = re.sub(r"\d(?=(?:\D*\d){2})", "*", shown)
        value = row[self.key_index]
        if value is None:
            return shown, "phone is missing"
        try:
            normalize_phone(value, self.default_region)
        except InvalidValue as exc:
            return shown, str(exc)
        return shown, "phone is not usable"

    def default_mapping(self, pk_column: str) -> list[tuple[str, str]]:
        known = ("phone", "email", "first_name", "last_name")
        return [(col, col.lower()) for col in self.columns if col.lower() in known]

    def check_destination(self, column: str, dest: str) -> None:
        if dest not in ("phone", "email", "first_name", "last_name"):
            raise SyncConfigError(
                f"column {column!r} maps to {dest!r}; subscriptions take phone, email, first_name and last_name"
            )

    def check_fields(self) -> None:
        if "phone" not in {d for _, d in self.fields}:
            columns = shown_columns(self.columns)
            if self.mapping is None:
                raise SyncConfigError(
                    f"subscriptions need a phone column: the model's columns are {columns}; with mapping=None "
                    "columns are matched by name, so one must be called phone (any letter case; email, first_name "
                    "and last_name likewise): alias it in the sql or pass "
                    f"mapping={{{guess_column(self.columns, 'phone')!r}: 'phone'}}"
                )
            raise SyncConfigError(
                f"subscriptions need a phone column: the mapping sends none to 'phone'; the model's columns are "
                f"{columns}"
            )

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        identity: dict[str, str] = {}
        names: dict[str, str] = {}
        note = None
        for i, dest in self.fields:
            value = row[i]
            if dest == "phone":
                try:
                    identity["phone"] = normalize_phone(value, self.default_region)
                except InvalidValue as exc:
                    return Invalid(str(exc))
            elif dest == "email" and value is not None:
                try:
                    identity["email"] = normalize_email(value)
                except InvalidValue as exc:
                    note = f"{exc}; subscribed by phone only"
            elif dest in ("first_name", "last_name") and value is not None:
                text = str(value).strip()
                if text:
                    names["firstName" if dest == "first_name" else "lastName"] = text[:255]
        payload = self.subscribe_body(identity)
        # Kept with the membership: a later run can tell that a member whose phone it cannot read is still there.
        identity["pk"] = key_text(row[self.pk_index])
        return Prepared(payload=payload, identity=identity, names=names, note=note)

    def subscribe_body(self, identity: Mapping[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = {"user": {k: identity[k] for k in ("phone", "email") if identity.get(k)}}
        if self.sign_up_source_id:
            body["signUpSourceId"] = self.sign_up_source_id
        else:
            body["locale"] = dict(self.locale or {})
            body["subscriptionType"] = self.subscription_type
        body["singleOptIn"] = self.single_opt_in
        return body

    @property
    def writes_names(self) -> bool:
        """Whether first/last names are mapped (written as attributes after a subscribe)."""
        return "first_name" in self.field_index or "last_name" in self.field_index

    def email_of(self, row: Sequence[Any]) -> str | None:
        """The row's email as it would be sent (lower-cased for comparison), or None."""
        index = self.field_index.get("email")
        if index is None or row[index] is None:
            return None
        try:
            return normalize_email(row[index]).lower()
        except InvalidValue:
            return None

    def unsubscribe_body(self, identity: Mapping[str, str], *, email: bool = True) -> dict[str, Any]:
        """Name the subscriptions (type and channel) instead of "all": we only undo what we did.

        ``email=False`` leaves the EMAIL channel alone: the address is still in the model (another row has it).
        """
        subscriptions = [{"type": self.subscription_type, "channel": "TEXT"}]
        if email and identity.get("email"):
            subscriptions.append({"type": self.subscription_type, "channel": "EMAIL"})
        return {
            "user": {k: identity[k] for k in ("phone", "email") if identity.get(k)},
            "subscriptions": subscriptions,
            "notification": {"disabled": not self.notify_on_unsubscribe},
        }

    # -- run hooks: the subscriptions' own phases live in phases.py ---------------------------------------------

    def bind(self, run: Run) -> None:
        super().bind(run)
        self.phases = SubscriptionPhases(self, run)

    def summary_counters(self) -> dict[str, Any]:
        return {
            "already_subscribed": 0,
            "shared_phones": 0,
            "blocked_removals": 0,
            "held_removals": 0,
            "names_written": 0,
        }

    def before_rows(self) -> None:
        self.phases.before_rows()

    def observe(self, key: str, row: Sequence[Any]) -> None:
        self.phases.observe(key, row)

    def observe_unkeyed(self, row: Sequence[Any]) -> None:
        self.phases.observe_unkeyed(row)

    def stream_endpoint(self) -> str:
        return EndpointName.UNSUBSCRIBE if self.mode == "remove" else EndpointName.SUBSCRIBE

    def classify(
        self, key: str, row: Sequence[Any], state: StateRow | None, status: str | None, row_hash: str
    ) -> str | None:
        return self.phases.classify(key, row, state, status, row_hash)

    def unrecognised_state(self, state: StateRow) -> str | None:
        if state.member is not None and state.member not in KNOWN_MEMBERS:
            return f"its state row has membership {str(state.member)[:40]!r}, which this version never writes"
        return None

    def body(self, op: str, prepared: Prepared) -> dict[str, Any]:
        if op == "removed":
            return self.unsubscribe_body(prepared.identity)
        return prepared.payload

    def before_send(self, items: list[Planned]) -> list[Planned]:
        return self.phases.skip_already_subscribed(items)

    def read_ok(self, item: Planned, result: Result) -> Answer:
        return read_subscription_answer(self, item, result, self.phases)

    def after_rows(self) -> None:
        self.phases.after_rows()
