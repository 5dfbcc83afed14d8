"""AttentiveAttributesOperator: warehouse rows to subscriber custom attributes (Upsert)."""

from __future__ import annotations

from airflow_provider_attentive.assets import destination_name
from airflow_provider_attentive.operators.base import AttentiveSyncOperator
from airflow_provider_attentive.sync.objects import AttributesType, ObjectType


class AttentiveAttributesOperator(AttentiveSyncOperator):
    """Upsert custom attributes (loyalty tier, lifetime value, ...) onto Attentive subscriber profiles.

    Each row becomes one ``POST /v1/attributes/custom`` with ``{"user": {...}, "properties": {...}}``.
    Destination fields ``phone``, ``email`` and ``client_user_id`` identify the subscriber; every other mapped
    field is an attribute sent under its destination name. Only rows that are new, changed since Attentive
    last accepted them, or failed last time are sent. See :class:`AttentiveSyncOperator` for the
    shared parameters.
    """

    object_type = "attributes"
    mode_default = "upsert"

    def openlineage_destination(self) -> str:
        # One set of custom attributes per subscriber profile, written by every attributes sync alike.
        return destination_name(self.object_type)

    def build_object(self) -> ObjectType:
        return AttributesType(
            primary_key=self.primary_key,
            mapping=self.mapping,
            default_region=self.default_region,
            allow_sensitive=self.allow_sensitive_columns,
        )
