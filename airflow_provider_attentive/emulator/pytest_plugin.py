"""Pytest fixtures for the Attentive emulator.

Load with ``pytest_plugins = ["airflow_provider_attentive.emulator.pytest_plugin"]``.

* ``attentive_emulator_server`` (session): one in-process emulator with keys ``test-key``
  (all scopes) and ``readonly-key`` (no scopes; only ``/v1/me`` and the bulk job status route work).
* ``attentive_emulator`` (function): the same emulator, reset before the test.
* ``attentive_emulator_process`` (session): the emulator in a separate process (same keys),
  for tests that kill or signal processes; reset it yourself via ``.client.reset()``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .keys import ALL_SCOPES, KeySpec
from .runner import Emulator, EmulatorProcess

__all__ = [
    "READONLY_KEY",
    "TEST_KEY",
    "attentive_emulator",
    "attentive_emulator_process",
    "attentive_emulator_server",
]

TEST_KEY = "test-key"
READONLY_KEY = "readonly-key"


def _keys() -> dict[str, KeySpec]:
    return {
        TEST_KEY: KeySpec(scopes=ALL_SCOPES, company_name="Emulated Co"),
        READONLY_KEY: KeySpec(scopes=(), company_name="Emulated Co"),
    }


@pytest.fixture(scope="session")
def attentive_emulator_server() -> Iterator[Emulator]:
    """A started in-process emulator shared by the whole session."""
    with Emulator(host="127.0.0.1", port=0, keys=_keys()) as emu:
        yield emu


@pytest.fixture
def attentive_emulator(attentive_emulator_server: Emulator) -> Iterator[Emulator]:
    """The session emulator with all data, stats, faults and limits reset for this test."""
    attentive_emulator_server.client.reset()
    yield attentive_emulator_server


@pytest.fixture(scope="session")
def attentive_emulator_process() -> Iterator[EmulatorProcess]:
    """An emulator running as a subprocess (``python -m airflow_provider_attentive.emulator``)."""
    with Emulator.spawn(keys=_keys()) as proc:
        yield proc
