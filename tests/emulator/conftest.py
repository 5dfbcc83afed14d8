"""Fixtures of the emulator tests: an httpx client that talks to the emulated /v1 API."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_attentive.emulator import Emulator


@pytest.fixture
def api(attentive_emulator: Emulator) -> Iterator[httpx.Client]:
    """Client for ``<emulator>/v1`` authenticated with the all-scopes ``test-key``."""
    with httpx.Client(
        base_url=f"{attentive_emulator.url}/v1",
        headers={"Authorization": "Bearer test-key"},
        timeout=10,
    ) as client:
        yield client
