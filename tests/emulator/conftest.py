"""Helpers shared by the emulator tests: an httpx client that talks to the emulated /v1 API."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_attentive.emulator import Emulator

PHONE = "+14155550100"
EMAIL = "person@example.com"


@pytest.fixture
def api(attentive_emulator: Emulator) -> Iterator[httpx.Client]:
    """Client for ``<emulator>/v1`` authenticated with the all-scopes ``test-key``."""
    with httpx.Client(
        base_url=f"{attentive_emulator.url}/v1",
        headers={"Authorization": "Bearer test-key"},
        timeout=10,
    ) as client:
        yield client


def error_message(response: httpx.Response) -> str:
    """The ``error.message`` of an emulator error body (asserting the documented shape)."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"]["id"], int)
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message
