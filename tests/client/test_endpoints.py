"""The endpoint table: names, scopes, published limits, and which requests are safe to resend."""

from __future__ import annotations

import pytest

from airflow_provider_attentive.client.endpoints import ENDPOINTS, EndpointName, get_endpoint


def test_endpoint_table() -> None:
    assert {n for n, e in ENDPOINTS.items() if not e.idempotent} == {
        "events",
        "subscribe",
        "unsubscribe",
        "segment_create",
    }
    assert ENDPOINTS["unsubscribe"].default_rate == 5
    assert ENDPOINTS["subscribe"].default_rate == 10
    assert ENDPOINTS["identity"].default_rate == 10
    assert ENDPOINTS["me"].scope is None
    assert ENDPOINTS["subscriptions_read"].method == "GET"


def test_every_name_has_exactly_one_row() -> None:
    assert list(ENDPOINTS) == list(EndpointName)
    assert all(endpoint.name is name for name, endpoint in ENDPOINTS.items())


def test_names_read_as_their_values() -> None:
    assert [n.value for n in EndpointName] == [
        "me",
        "attributes",
        "events",
        "subscribe",
        "unsubscribe",
        "subscriptions_read",
        "identity",
        "bulk",
        "bulk_job",
        "segment_members_add",
        "segment_members_remove",
        "segment_create",
        "segment_read",
        "segment_update",
        "segment_archive",
        "segments_list",
    ]
    assert str(EndpointName.SUBSCRIBE) == f"{EndpointName.SUBSCRIBE}" == "subscribe"
    assert EndpointName.SUBSCRIBE == "subscribe"


def test_get_endpoint_takes_a_name_or_its_value() -> None:
    assert get_endpoint("subscribe") is get_endpoint(EndpointName.SUBSCRIBE) is ENDPOINTS[EndpointName.SUBSCRIBE]
    with pytest.raises(KeyError, match=r"unknown Attentive endpoint 'subscribtion'; expected one of \['attributes'"):
        get_endpoint("subscribtion")
