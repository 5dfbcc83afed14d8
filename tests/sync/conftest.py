"""Fixtures for engine tests: a real SQLite warehouse, the emulator over a real socket, a real transport."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.emulator.schemas import get_request_validator
from airflow_provider_attentive.hooks.transport import AttentiveTransport, TransportConfig
from airflow_provider_attentive.sync.engine import SyncEngine, SyncOptions
from airflow_provider_attentive.sync.objects import ObjectType
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.state import StateStore


@pytest.fixture
def transport(attentive_emulator: Emulator) -> Iterator[AttentiveTransport]:
    config = TransportConfig(base_url=attentive_emulator.url, api_key="test-key", backoff_base=0.01, backoff_max=0.05)
    with AttentiveTransport(config) as t:
        yield t


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "warehouse.db")
    yield conn
    conn.close()


def phone(i: int) -> str:
    """A valid, distinct US number per index (libphonenumber accepts 415-2xx-xxxx)."""
    return f"+1415{2000000 + i:07d}"


def create_customers(conn: sqlite3.Connection, n: int, *, table: str = "customers") -> None:
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (customer_id INTEGER, phone TEXT, email TEXT, loyalty_tier TEXT, ltv REAL)")
    conn.executemany(
        f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?)",
        [(i, phone(i), f"user{i}@example.com", ("gold", "silver")[i % 2], round(i * 10.5, 2)) for i in range(n)],
    )
    conn.commit()


RunSync = Callable[..., dict[str, Any]]


@pytest.fixture
def run_sync(transport: AttentiveTransport) -> RunSync:
    """Run one sync: ``run_sync(obj, conn, sql, state_conn=None, **options)``."""

    def run(
        obj: ObjectType,
        conn: Any,
        sql: str,
        *,
        state_conn: Any = None,
        placeholder: str = "?",
        sender: Any = None,
        **options: Any,
    ) -> dict[str, Any]:
        options.setdefault("sync_id", "test.sync")
        options.setdefault("progress_interval_s", 0.5)
        chunk = options.pop("chunk", 1000)
        engine = SyncEngine(
            obj,
            SyncOptions(**options),
            source=SqlSource(conn, sql, chunk_size=chunk),
            state=StateStore(state_conn if state_conn is not None else conn, placeholder=placeholder),
            sender=sender or transport,
        )
        return engine.run()

    return run


def bodies(emu: Emulator, endpoint: str) -> list[dict[str, Any]]:
    """Request bodies the emulator received on ``endpoint``, each checked against Attentive's v1 schema."""
    validator = get_request_validator()
    out = []
    for req in emu.client.requests(endpoint=endpoint):
        body = req["body"]
        if req.get("method", "POST") == "POST":
            problem = validator.validate(endpoint, body)
            assert problem is None, f"{endpoint} body does not match Attentive's v1 schema: {problem}"
        out.append(body)
    return out


def request_count(emu: Emulator, endpoint: str) -> int:
    return int(emu.client.stats()["endpoints"][endpoint]["requests"])


def ops(summary: dict[str, Any], name: str) -> tuple[int, int, int]:
    d = summary[name]
    return d["added"], d["changed"], d["removed"]


__all__: Sequence[str] = ("bodies", "create_customers", "ops", "phone", "request_count")
