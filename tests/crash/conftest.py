"""Fixtures for crash tests: real operators in their own processes, the emulator in its own, SQLite on disk.

* ``emulator`` - the session's subprocess emulator (``Emulator.spawn``), reset for the test, with some latency
  (so a run lasts long enough to be killed mid-flight) and subscribe/unsubscribe limits of 50/s.
* ``warehouse`` - a SQLite file used as warehouse *and* state store (as the operators do for SQLite), with
  helpers that read the state, log and lock tables through short-lived connections.
* ``launcher`` - starts ``tests.crash.runner`` for a config (see :class:`tests.helpers.crash.Launcher`), forked
  from the session's ``fork_server``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, EmulatorProcess, KeySpec
from tests.helpers.crash import API_KEY, NOREAD_KEY, SEED, ForkServer, Launcher
from tests.helpers.warehouse import Warehouse

LATENCY_MS = 30
JITTER_MS = 10


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorProcess]:
    read_less = tuple(s for s in ALL_SCOPES if s != "subscriptions:read")
    keys = {API_KEY: KeySpec(scopes=ALL_SCOPES), NOREAD_KEY: KeySpec(scopes=read_less)}
    with Emulator.spawn(keys=keys) as proc:
        yield proc


@pytest.fixture
def emulator(emulator_process: EmulatorProcess) -> Iterator[EmulatorProcess]:
    client = emulator_process.client
    client.reset()
    client.set_faults(latency_ms=LATENCY_MS, jitter_ms=JITTER_MS, seed=SEED)
    client.set_limits({"subscribe": 50, "unsubscribe": 50})
    yield emulator_process
    client.clear_faults()


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse.db")


@pytest.fixture(scope="session")
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    server = ForkServer(tmp_path_factory.mktemp("fork-server") / "server.log")
    yield server
    server.close()


@pytest.fixture
def launcher(emulator: EmulatorProcess, warehouse: Warehouse, fork_server: ForkServer, tmp_path: Path) -> Launcher:
    out = Launcher(emulator, warehouse, tmp_path, fork_server)
    out.set_connection()
    return out
