"""The object types with the tests' defaults: only what a test is about needs spelling out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow_provider_attentive.sync.objects import AttributesType, EventsType, SubscriptionsType
from airflow_provider_attentive.sync.objects.segments import SegmentSpec, SegmentsType

__all__ = ("attributes", "event_ids", "events", "segments", "subs")


def attributes(**kwargs: Any) -> AttributesType:
    """Custom attributes keyed by ``customer_id``, columns matched by name, phones in E.164 only."""
    return AttributesType(**{"primary_key": "customer_id", "mapping": None, "default_region": None, **kwargs})


def events(**kwargs: Any) -> EventsType:
    """``Order Shipped`` events of the sync ``test.sync`` keyed by ``id``, columns matched by name."""
    defaults = {"sync_id": "test.sync", "event_type": "Order Shipped", "primary_key": "id"}
    return EventsType(**{**defaults, "mapping": None, "default_region": None, **kwargs})


def subs(**kwargs: Any) -> SubscriptionsType:
    """MARKETING text subscriptions keyed by phone (double opt-in, no unsubscribe confirmation texts)."""
    defaults = {
        "primary_key": "phone",
        "mapping": None,
        "default_region": None,
        "sign_up_source_id": "64140",
        "locale": None,
        "subscription_type": "MARKETING",
        "single_opt_in": False,
        "notify_on_unsubscribe": False,
    }
    return SubscriptionsType(**{**defaults, **kwargs})


def segments(
    external_id: str = "vip_gold",
    name: str = "VIP Gold",
    *,
    description: str | None = None,
    adopt_existing: bool = False,
    **kwargs: Any,
) -> SegmentsType:
    """Members of the segment ``vip_gold`` ("VIP Gold") keyed by ``customer_id``, identifiers matched by name."""
    spec = SegmentSpec(external_id, name, description=description, adopt_existing=adopt_existing)
    return SegmentsType(
        segment=spec, **{"primary_key": "customer_id", "mapping": None, "default_region": None, **kwargs}
    )


def event_ids(sync_id: str, keys: Iterable[str]) -> dict[str, str]:
    """The ``externalEventId`` an events sync ``sync_id`` gives each of ``keys``, mapped back to its key."""
    obj = events(sync_id=sync_id)
    return {obj.external_event_id(k): k for k in keys}
