"""The httpx log filters: identifiers and link signatures in query strings never reach the task log."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_attentive.client import AttentiveTransport, LimiterRegistry, TransportConfig
from airflow_provider_attentive.client.redact import (
    RedactIdentifiers,
    RedactSignedUrls,
    install_httpx_filter,
    url_without_query,
)
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


# -- signed links -------------------------------------------------------------------------------------------


def _filtered(message: str, *args: object) -> str:
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, message, args or None, None)
    RedactSignedUrls().filter(record)
    return record.getMessage()


@pytest.mark.parametrize(
    "query",
    [
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20250101&X-Amz-Signature=deadbeef",
        "Expires=1700000000&Signature=deadbeef&Key-Pair-Id=K2JCJMDEHXQW5F",
        "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=deadbeef",
        "sv=2022-11-02&se=2025-01-01T00%3A00%3A00Z&sp=r&sig=deadbeef",
        "token=deadbeef",
    ],
)
def test_signed_query_strings_are_dropped_from_log_lines(query: str) -> None:
    line = _filtered(
        'HTTP Request: %s %s "%s %d %s"', "GET", f"https://files.example.test/r/j.jsonl?{query}", "HTTP/1.1", 200, "OK"
    )
    assert line == 'HTTP Request: GET https://files.example.test/r/j.jsonl?<redacted> "HTTP/1.1 200 OK"'


def test_api_query_strings_without_a_signature_stay() -> None:
    line = _filtered("HTTP Request: GET https://api.attentivemobile.com/v2/segments?cursor=abc&limit=10 200")
    assert line.endswith("?cursor=abc&limit=10 200")


def test_url_without_query() -> None:
    assert url_without_query("https://u:p@files.example.test:8443/a/b.jsonl?sig=x#frag") == (
        "https://files.example.test:8443/a/b.jsonl"
    )
    assert url_without_query("http://[::1]:80/r?sig=x") == "http://[::1]:80/r"
    assert url_without_query("https://h:99999/r?sig=x") == "https://h:99999/r"


def test_the_filters_are_installed_on_the_httpx_logger() -> None:
    install_httpx_filter()
    kinds = [type(f) for f in logging.getLogger("httpx").filters]
    assert kinds.count(RedactIdentifiers) == 1 and kinds.count(RedactSignedUrls) == 1
