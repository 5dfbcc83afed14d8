"""The object types: one module (or package) each; the engine knows none of them, only their interface.

A new type subclasses :class:`~airflow_provider_attentive.sync.object_type.ObjectType` in a module of its own
here and is re-exported below; nothing in the engine changes (see ``docs/architecture.md``).
"""

from airflow_provider_attentive.sync.object_type import Invalid, ObjectType, Prepared, key_text
from airflow_provider_attentive.sync.objects.attributes import AttributesType
from airflow_provider_attentive.sync.objects.events import EventsType
from airflow_provider_attentive.sync.objects.segments import SegmentsType
from airflow_provider_attentive.sync.objects.subscriptions import SubscriptionsType

__all__ = [
    "AttributesType",
    "EventsType",
    "Invalid",
    "ObjectType",
    "Prepared",
    "SegmentsType",
    "SubscriptionsType",
    "key_text",
]
