"""Fixtures for the client tests (no Airflow involved).

Most tests talk real HTTP to the Attentive emulator (``attentive_emulator`` from the emulator's pytest
plugin); answers it does not give come from ``stub_server``; ``redis_server`` backs the shared budget.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, EmulatorProcess, KeySpec
from tests.helpers.redis import _redis_module, redis_server
from tests.helpers.stub_server import closed_port_url, stub_server

__all__ = ["_redis_module", "closed_port_url", "redis_server", "separate_emulator", "stub_server"]


@pytest.fixture(scope="module")
def _emulator_subprocess() -> Iterator[EmulatorProcess]:
    with Emulator.spawn(keys={"test-key": KeySpec(scopes=ALL_SCOPES, company_name="Emulated Co")}) as proc:
        yield proc


@pytest.fixture
def separate_emulator(_emulator_subprocess: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The emulator in its own process, reset for this test.

    Used by the tests that check one-second windows at full speed: an in-process emulator shares the
    GIL (and garbage-collection pauses) with the client under test, so when the machine is busy its
    arrival timestamps can lag by more than the limiter's 20 ms margin. That measures the test
    harness, not the limiter; against a real server our own pauses only delay sends, which is safe.
    """
    _emulator_subprocess.client.reset()
    yield _emulator_subprocess
    _emulator_subprocess.client.reset()
