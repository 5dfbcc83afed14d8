"""The backend names and the limiter a configuration gets when the caller passes none."""

from __future__ import annotations

import pytest

from airflow_provider_attentive.client import RATE_LIMIT_BACKENDS, AttentiveTransport, TransportConfig
from airflow_provider_attentive.get_provider_info import CONN_FIELDS

BASE = "https://api.example"
KEY = "sk_live_shared_budget_7f3a9c"


def test_sql_backend_needs_a_limiter_outside_the_hook() -> None:
    config = TransportConfig(BASE, KEY, rate_limit_backend="sql")
    with pytest.raises(ValueError, match="rate_limit_sql_conn_id"):
        AttentiveTransport(config)


def test_the_connection_form_offers_exactly_the_backends() -> None:
    assert CONN_FIELDS["rate_limit_backend"]["schema"]["enum"] == [*RATE_LIMIT_BACKENDS, None]
    with pytest.raises(ValueError, match="must be one of local, redis, sql"):
        TransportConfig(BASE, KEY, rate_limit_backend="memcached")
