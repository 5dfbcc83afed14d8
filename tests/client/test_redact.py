"""The httpx log filter: identifiers in query strings never reach the task log."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_attentive.client import AttentiveTransport, LimiterRegistry, TransportConfig
from airflow_provider_attentive.emulator import Emulator


def test_phone_numbers_in_query_strings_are_masked_in_httpx_logs(
    attentive_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    with AttentiveTransport(
        TransportConfig(attentive_emulator.url, "test-key"), registry=LimiterRegistry()
    ) as transport:
        result = transport.request("subscriptions_read", params={"phone": "+14155550123"})
    assert result.ok
    assert "HTTP Request: GET" in caplog.text and "phone=***" in caplog.text
    assert "4155550123" not in caplog.text
