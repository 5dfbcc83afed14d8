"""The operators check the API key once, with ``GET /v1/me``, before reading the model or sending anything."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_attentive.emulator import Emulator
from tests.helpers.operators import TaskInstance, context, operator
from tests.helpers.records import request_count
from tests.helpers.warehouse import Warehouse, create_customers

REVOKED = "k-revoked-0123456789"
WRITES = ("attributes", "events", "subscribe", "unsubscribe", "identity")


def use_attentive(monkeypatch: pytest.MonkeyPatch, url: str, key: str, **extra: object) -> None:
    connection = {"conn_type": "attentive", "host": url, "password": key, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_ATTENTIVE_DEFAULT", json.dumps(connection))


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    create_customers(Warehouse(path), 20)
    return path


@pytest.fixture
def revoked_key(attentive_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """A key Attentive knew once and has revoked: every call with it is answered 401."""
    attentive_emulator.client.add_key(REVOKED)
    attentive_emulator.client.remove_key(REVOKED)
    use_attentive(monkeypatch, attentive_emulator.url, REVOKED)
    return REVOKED


def writes(emu: Emulator) -> int:
    return sum(request_count(emu, name) for name in WRITES)


def attentive_tables(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'attentive%'").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["attributes", "subscriptions"])
def test_a_revoked_key_on_a_fresh_sync_fails_before_anything_is_sent(
    attentive_emulator: Emulator, warehouse: Path, revoked_key: str, kind: str
) -> None:
    kwargs: dict[str, Any] = {"sql": "SELECT * FROM customers", "primary_key": "customer_id", "batch_size": 5}
    if kind == "subscriptions":
        kwargs.update(primary_key="phone", mode="mirror", sign_up_source_id="64140")
    ti = TaskInstance()
    with pytest.raises(AirflowFailException) as info:
        operator(kind, **kwargs).execute(context(ti))
    message = str(info.value)
    assert "refused the API key of connection 'attentive_default'" in message and "HTTP 401" in message
    assert "before reading or sending anything" in message
    assert revoked_key not in message
    assert writes(attentive_emulator) == 0, "a write reached Attentive with a refused key"
    assert request_count(attentive_emulator, "me") == 1, "the key is checked with one request"
    assert attentive_tables(warehouse) == 0, "nothing was recorded either"
    assert ti.xcom == {}


def test_a_dry_run_checks_the_key_too(attentive_emulator: Emulator, warehouse: Path, revoked_key: str) -> None:
    preview = operator("attributes", sql="SELECT * FROM customers", primary_key="customer_id", dry_run=True)
    with pytest.raises(AirflowFailException, match="refused the API key"):
        preview.execute(context())
    assert request_count(attentive_emulator, "me") == 1 and writes(attentive_emulator) == 0


def test_a_good_key_costs_one_request_that_the_summary_does_not_count(
    attentive_emulator: Emulator, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_attentive(monkeypatch, attentive_emulator.url, "test-key")
    summary = operator("attributes", sql="SELECT * FROM customers", primary_key="customer_id").execute(context())
    assert summary["succeeded"]["added"] == 20 and summary["requests"] == 20
    assert request_count(attentive_emulator, "me") == 1 and request_count(attentive_emulator, "attributes") == 20


def test_a_failing_check_leaves_the_decision_to_the_run(
    attentive_emulator: Emulator, warehouse: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A 5xx from GET /v1/me says nothing about the key: the sync goes on (and its own breaker would stop it)."""
    use_attentive(monkeypatch, attentive_emulator.url, "test-key")
    attentive_emulator.client.set_faults(error_rate=1.0, endpoints=["me"])
    capfd.readouterr()
    summary = operator("attributes", sql="SELECT * FROM customers", primary_key="customer_id").execute(context())
    assert summary["succeeded"]["added"] == 20
    assert request_count(attentive_emulator, "me") == 2, "two attempts, then the run goes on"
    assert "could not check the Attentive API key before sending" in "".join(capfd.readouterr())


def test_an_unreachable_attentive_fails_the_try_but_not_for_good(
    attentive_emulator: Emulator, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    use_attentive(monkeypatch, f"http://127.0.0.1:{port}", "test-key", max_attempts=1)
    with pytest.raises(AirflowException) as info:
        operator("attributes", sql="SELECT * FROM customers", primary_key="customer_id").execute(context())
    assert not isinstance(info.value, AirflowFailException), "a retry may find Attentive back"
