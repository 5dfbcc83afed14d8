"""What the shared backends have in common: URLs with passwords are redacted before they are shown."""

from __future__ import annotations

from airflow_provider_attentive.client.ratelimit.shared import redact_url


def test_redact_url() -> None:
    assert redact_url("redis://:pw@redis:6379/2") == "redis://:***@redis:6379/2"
    assert redact_url("redis://user:pw@[::1]:6379/0") == "redis://user:***@[::1]:6379/0"
    assert redact_url("redis://redis:6379/2") == "redis://redis:6379/2"
