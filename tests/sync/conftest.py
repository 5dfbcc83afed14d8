"""Fixtures for engine tests: a real SQLite warehouse, the emulator over a real socket, a real transport."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_attentive.client import AttentiveTransport
from airflow_provider_attentive.emulator import Emulator
from tests.helpers.engine import RunSync, engine_runner
from tests.helpers.engine import transport as make_transport


@pytest.fixture
def transport(attentive_emulator: Emulator) -> Iterator[AttentiveTransport]:
    with make_transport(attentive_emulator.url) as t:
        yield t


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "warehouse.db")
    yield conn
    conn.close()


@pytest.fixture
def run_sync(transport: AttentiveTransport) -> RunSync:
    """Run one sync: ``run_sync(obj, conn, sql, state_conn=None, **options)`` (see ``tests.helpers.engine``)."""
    return engine_runner(transport)
