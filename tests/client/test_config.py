"""TransportConfig and the base URL rules: https, or plain http for loopback hosts only."""

from __future__ import annotations

import pytest

from airflow_provider_attentive.client.config import TransportConfig, normalize_base_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("api.attentivemobile.com", "https://api.attentivemobile.com"),
        ("https://api.attentivemobile.com/v1", "https://api.attentivemobile.com"),
        ("https://api.attentivemobile.com/v1/", "https://api.attentivemobile.com"),
        ("HTTPS://api.attentivemobile.com/", "https://api.attentivemobile.com"),
        ("https://proxy.example/attentive/v1", "https://proxy.example/attentive"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://127.9.9.9:8765/v1", "http://127.9.9.9:8765"),
        ("http://localhost:8765", "http://localhost:8765"),
        ("http://[::1]:8765", "http://[::1]:8765"),
    ],
)
def test_base_url_normalisation(given: str, expected: str) -> None:
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize(
    "url", ["http://api.attentivemobile.com", "http://10.0.0.5:8080", "http://attentive.internal/v1"]
)
def test_plain_http_is_refused_for_non_loopback_hosts(url: str) -> None:
    with pytest.raises(ValueError, match="unencrypted") as info:
        TransportConfig(url, "sk_live_do_not_leak")
    assert "sk_live_do_not_leak" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://api.attentivemobile.com", "https://"),
        ("https://user:pw@api.attentivemobile.com", "credentials"),
        ("https://api.attentivemobile.com/?x=1", "query"),
        ("", "empty"),
        ("https://:99", "no host"),
    ],
)
def test_bad_base_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TransportConfig(url, "k")


def test_config_validation_and_repr_hide_the_key() -> None:
    config = TransportConfig("api.attentivemobile.com", " sk_live_hidden_1 ", rate_limits={"subscribe": 2.5})
    assert config.api_key == "sk_live_hidden_1"
    assert "sk_live_hidden_1" not in repr(config)
    assert config.rate_for("subscribe") == 2.5
    assert config.rate_for("unsubscribe") == 5
    with pytest.raises(ValueError, match="unknown endpoint"):
        TransportConfig("api.attentivemobile.com", "k", rate_limits={"subscribtion": 1})
    with pytest.raises(ValueError, match="positive"):
        TransportConfig("api.attentivemobile.com", "k", rate_limits={"subscribe": 0})
    with pytest.raises(ValueError, match="empty"):
        TransportConfig("api.attentivemobile.com", "  ")
    with pytest.raises(ValueError, match="control characters") as info:
        TransportConfig("api.attentivemobile.com", "sk_live\nInjected: header")
    assert "Injected" not in str(info.value)
