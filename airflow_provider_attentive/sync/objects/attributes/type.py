"""Custom attributes (Upsert): one ``POST /v1/attributes/custom`` per changed row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_attentive.client import EndpointName
from airflow_provider_attentive.sync.errors import SyncConfigError
from airflow_provider_attentive.sync.object_type import IDENTIFIER_FIELDS, Invalid, ObjectType, Prepared
from airflow_provider_attentive.sync.values import InvalidValue, scalar

__all__ = ["ATTRIBUTE_NAME_MAX", "AttributesType"]

ATTRIBUTE_NAME_MAX = 200


class AttributesType(ObjectType):
    """Custom attributes (Upsert): one ``POST /v1/attributes/custom`` per row."""

    object_type = "attributes"
    modes = ("upsert",)
    endpoint = EndpointName.ATTRIBUTES
    # An upsert is idempotent: sending one again is harmless, so a row left pending by a crash is resent.
    pending_status = "failed"

    def summary_counters(self) -> dict[str, Any]:
        return {"nothing_to_send": 0}

    def default_mapping(self, pk_column: str) -> list[tuple[str, str]]:
        pairs = []
        for col in self.columns:
            if col.lower() in IDENTIFIER_FIELDS:
                pairs.append((col, col.lower()))
            elif col != pk_column:
                pairs.append((col, col))
        return pairs

    def check_destination(self, column: str, dest: str) -> None:
        if dest in IDENTIFIER_FIELDS:
            return
        if len(dest) > ATTRIBUTE_NAME_MAX:
            raise SyncConfigError(
                f"attribute name {dest[:40]!r}... is {len(dest)} characters; Attentive allows at most "
                f"{ATTRIBUTE_NAME_MAX}"
            )
        self.check_sensitive_name(column, dest)

    def check_fields(self) -> None:
        dests = {d for _, d in self.fields}
        if not dests & set(IDENTIFIER_FIELDS):
            raise SyncConfigError(self._no_identifier_message())
        if not dests - set(IDENTIFIER_FIELDS):
            raise SyncConfigError("no attribute columns are mapped; there is nothing to sync")

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        user = self._user(row)
        if isinstance(user, Invalid):
            return user
        user_obj, note = user
        properties: dict[str, Any] = {}
        for i, dest in self.fields:
            if dest in IDENTIFIER_FIELDS:
                continue
            value = row[i]
            if value is None:
                continue  # NULL means "no value": never sent as null or ""
            bad = self._sensitive(i, value)
            if bad:
                return bad
            try:
                properties[dest] = scalar(value, dest)
            except InvalidValue as exc:
                return Invalid(str(exc))
        if not properties:
            return Invalid("every attribute is NULL; nothing to send", empty=True)
        return Prepared(payload={"properties": properties, "user": user_obj}, note=note)
