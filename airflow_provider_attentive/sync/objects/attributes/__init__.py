"""Custom attributes (Upsert): per row through v1, or in v2 bulk jobs."""

from airflow_provider_attentive.sync.objects.attributes.bulk import BulkAttributesDelivery, BulkMode, v2_user
from airflow_provider_attentive.sync.objects.attributes.type import ATTRIBUTE_NAME_MAX, AttributesType

__all__ = ["ATTRIBUTE_NAME_MAX", "AttributesType", "BulkAttributesDelivery", "BulkMode", "v2_user"]
