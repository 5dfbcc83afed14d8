"""Custom events (Insert): one ``POST /v1/events/custom`` per primary key, ever."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_attentive.client import EndpointName
from airflow_provider_attentive.sync.errors import SyncConfigError
from airflow_provider_attentive.sync.object_type import IDENTIFIER_FIELDS, Invalid, ObjectType, Prepared
from airflow_provider_attentive.sync.objects.timestamps import parse_timestamp, rfc3339
from airflow_provider_attentive.sync.state import StateRow
from airflow_provider_attentive.sync.values import InvalidValue, dumps, json_value

__all__ = ["STALE_AFTER", "EventsType"]

STALE_AFTER = dt.timedelta(hours=12)
# Attentive's REST docs forbid these in event types and property keys; the GraphQL docs add ' and , for keys,
# so we refuse the union: a key Attentive might reject is cheaper to fix here than to find in a journey.
_TYPE_FORBIDDEN = set("\"'(){}[]\\|,")
_PROPERTY_KEY_FORBIDDEN = set("\"'{}[]\\|,")
_EVENT_NAMESPACE = uuid.UUID("0c4d7a5e-0b47-4a2b-9a35-6c6f2f0e8a11")


class EventsType(ObjectType):
    """Custom events (Insert): one ``POST /v1/events/custom`` per primary key, ever."""

    object_type = "events"
    modes = ("insert",)
    endpoint = EndpointName.EVENTS

    def __init__(
        self,
        *,
        sync_id: str,
        event_type: str | None,
        skip_stale: bool = False,
        now: dt.datetime | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if event_type is not None:
            _check_event_type(event_type, config=True)
        self.sync_id = sync_id
        self.event_type = event_type
        self.skip_stale = skip_stale
        self.now = now or dt.datetime.now(dt.timezone.utc)

    def fingerprint_extra(self) -> Any:
        return self.event_type

    def summary_counters(self) -> dict[str, Any]:
        return {"stale": 0, "ignored_changes": 0}

    def classify(
        self, key: str, row: Sequence[Any], state: StateRow | None, status: str | None, row_hash: str
    ) -> str | None:
        # An event happened once: a delivered one is never sent again, even if its row changed since.
        if status == "ok":
            if state is not None and state.row_hash != row_hash:
                self.run.summary.extra["ignored_changes"] += 1
            return None
        return "added"

    def admit(self, op: str, prepared: Prepared) -> bool:
        if prepared.stale:
            # Sent (unless skip_stale) but counted: Attentive does not start journeys for old events.
            self.run.summary.extra["stale"] += 1
            return not self.skip_stale
        return True

    def default_mapping(self, pk_column: str) -> list[tuple[str, str]]:
        pairs = []
        for col in self.columns:
            low = col.lower()
            if low in IDENTIFIER_FIELDS:
                pairs.append((col, low))
            elif low == "type":
                pairs.append((col, "type"))
            elif low in ("timestamp", "occurred_at", "occurredat"):
                pairs.append((col, "timestamp"))
            elif low == "properties":
                pairs.append((col, "properties"))
            elif col != pk_column:
                pairs.append((col, f"properties.{col}"))
        return pairs

    def check_destination(self, column: str, dest: str) -> None:
        if dest in (*IDENTIFIER_FIELDS, "type", "timestamp", "properties"):
            if dest == "properties":
                self.check_sensitive_name(column, dest)
            return
        if dest.startswith("properties."):
            prop = dest[len("properties.") :]
            if not prop:
                raise SyncConfigError(f"mapping for column {column!r} names an empty property key")
            bad = _PROPERTY_KEY_FORBIDDEN & set(prop)
            if bad:
                raise SyncConfigError(
                    f"event property key {prop!r} contains {''.join(sorted(bad))!r}, which Attentive forbids"
                )
            self.check_sensitive_name(column, prop)
            return
        raise SyncConfigError(
            f"column {column!r} maps to {dest!r}, which is not an event field; use phone, email, "
            "client_user_id, type, timestamp, properties or properties.<key>"
        )

    def check_fields(self) -> None:
        dests = {d for _, d in self.fields}
        if not dests & set(IDENTIFIER_FIELDS):
            raise SyncConfigError(self._no_identifier_message())
        if "type" in dests and self.event_type is not None:
            raise SyncConfigError("give the event type either as event_type or as a column mapped to 'type', not both")
        if "type" not in dests and self.event_type is None:
            raise SyncConfigError("events need a type: pass event_type='Order Shipped' or map a column to 'type'")

    def external_event_id(self, key: str) -> str:
        """Deterministic per (sync, key): a resend is recognisably the same event."""
        return str(uuid.uuid5(_EVENT_NAMESPACE, f"{self.sync_id}\x1f{key}"))

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        user = self._user(row)
        if isinstance(user, Invalid):
            return user
        user_obj, note = user
        event_type = self.event_type
        occurred: dt.datetime | None = None
        properties: dict[str, Any] = {}
        singles: dict[str, Any] = {}
        for i, dest in self.fields:
            value = row[i]
            if dest == "type":
                if value is None or (isinstance(value, str) and not value.strip()):
                    return Invalid("event type is missing")
                try:
                    event_type = _check_event_type(str(value))
                except InvalidValue as exc:
                    return Invalid(str(exc))
            elif dest == "timestamp":
                if value is None:
                    continue
                try:
                    occurred = parse_timestamp(value)
                    occurred.astimezone(dt.timezone.utc)  # 0001-01-01 with a positive offset has no UTC time
                except InvalidValue as exc:
                    return Invalid(str(exc))
                except (OverflowError, ValueError):
                    return Invalid(f"timestamp {str(value)[:40]!r} is out of range")
            elif dest == "properties":
                if value is None:
                    continue
                try:
                    obj = json.loads(value) if isinstance(value, str | bytes) else value
                except ValueError:
                    return Invalid(f"column {self.columns[i]!r} is not valid JSON")
                if not isinstance(obj, Mapping):
                    return Invalid(f"column {self.columns[i]!r} must hold a JSON object of properties")
                bad = self._sensitive_in(i, obj)
                if bad:
                    return bad
                try:
                    properties.update(json_value(obj, "properties"))
                except InvalidValue as exc:
                    return Invalid(str(exc))
            elif dest.startswith("properties."):
                if value is None:
                    continue
                bad = self._sensitive(i, value)
                if bad:
                    return bad
                name = dest[len("properties.") :]
                try:
                    singles[name] = json_value(value, name)
                except InvalidValue as exc:
                    return Invalid(str(exc))
        properties.update(singles)
        for prop in properties:
            bad_chars = _PROPERTY_KEY_FORBIDDEN & set(prop)
            if bad_chars or not prop:
                return Invalid(f"property key {prop[:60]!r} is empty or contains characters Attentive forbids")
        if event_type is None:  # pragma: no cover - check_fields guarantees a source of type
            return Invalid("event type is missing")
        payload: dict[str, Any] = {
            "type": event_type,
            "user": user_obj,
            "externalEventId": self.external_event_id(key),
        }
        if properties:
            payload["properties"] = properties
        stale = False
        if occurred is not None:
            payload["occurredAt"] = rfc3339(occurred)
            stale = occurred < self.now - STALE_AFTER
        try:
            dumps(payload)
        except ValueError:
            return Invalid("a property value is not representable in JSON (NaN or infinity)")
        return Prepared(payload=payload, stale=stale, note=note)


def _check_event_type(value: str, *, config: bool = False) -> str:
    problem = None
    if not value.strip():
        problem = "event type is empty"
    elif _TYPE_FORBIDDEN & set(value):
        bad = "".join(sorted(_TYPE_FORBIDDEN & set(value)))
        problem = f"event type {value[:60]!r} contains {bad!r}, which Attentive forbids"
    elif len(value) > 255:
        problem = "event type is longer than 255 characters"
    if problem:
        if config:
            raise SyncConfigError(problem)
        raise InvalidValue(problem)
    return value
