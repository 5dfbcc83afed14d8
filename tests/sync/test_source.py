"""How often, and how, a run reads the model: warehouses bill by query and by columns scanned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.errors import SourceDataError
from airflow_provider_attentive.sync.objects import AttributesType
from airflow_provider_attentive.sync.source import SqlSource
from tests.sync.conftest import RunSync, create_customers
from tests.sync.test_subscriptions import set_members, subs


def traced(path: Path, marker: str) -> tuple[sqlite3.Connection, list[str]]:
    """A warehouse connection that records every statement mentioning ``marker`` (the model's table)."""
    conn = sqlite3.connect(path)
    seen: list[str] = []
    conn.set_trace_callback(lambda sql: seen.append(sql) if marker in sql else None)
    return conn, seen


def test_an_attributes_run_executes_the_model_once_plus_one_key_check(
    tmp_path: Path, run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    setup = sqlite3.connect(tmp_path / "w.db")
    create_customers(setup, 50)
    setup.close()
    conn, seen = traced(tmp_path / "w.db", "FROM customers")
    state = sqlite3.connect(tmp_path / "state.db")
    sql = "SELECT customer_id, phone, loyalty_tier FROM customers"
    summary = run_sync(
        AttributesType(primary_key="customer_id", mapping=None, default_region=None), conn, sql, state_conn=state
    )
    assert summary["succeeded"]["added"] == 50
    scans = [s for s in seen if "WHERE 1 = 0" not in s]  # the column probe reads no rows
    assert len(seen) - len(scans) == 1
    assert len(scans) == 2, scans  # the primary key check (NULLs and duplicates together) and the stream
    assert "GROUP BY" in scans[0] and "IS NULL" in scans[0]
    assert scans[1] == sql


def test_a_mirror_guard_scan_reads_only_the_key_column(
    tmp_path: Path, run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    setup = sqlite3.connect(tmp_path / "w.db")
    set_members(setup, list(range(20)))
    setup.close()
    state = sqlite3.connect(tmp_path / "state.db")
    sql = "SELECT phone, email FROM members"
    first_conn, _ = traced(tmp_path / "w.db", "FROM members")
    run_sync(subs(), first_conn, sql, state_conn=state, mode="mirror")
    setup = sqlite3.connect(tmp_path / "w.db")
    set_members(setup, list(range(2, 22)))
    setup.close()
    conn, seen = traced(tmp_path / "w.db", "FROM members")
    summary = run_sync(subs(), conn, sql, state_conn=state, mode="mirror")
    assert summary["succeeded"]["added"] == 2 and summary["succeeded"]["removed"] == 2
    assert summary["rows_read"] == 20  # the guard scan is not counted twice
    guard = [s for s in seen if s.startswith('SELECT "phone" FROM (')]
    assert guard == [f'SELECT "phone" FROM ({sql}) attentive_src'], seen
    assert len(seen) == 4  # probe, key check, guard scan (one column), stream


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([(1,), (2,), (None,), (None,), (3,)], "2 row(s) have a NULL id"),
        ([(1,), (2,), (2,), (3,), (3,), (3,)], "2 duplicate id value(s), e.g. '2' (2 rows), '3' (3 rows)"),
        ([(None,), (1,), (1,)], "1 row(s) have a NULL id; 1 duplicate id value(s), e.g. '1' (2 rows)"),
    ],
)
def test_the_key_check_reports_nulls_and_duplicates_from_one_query(
    rows: list[tuple[int | None]], expected: str
) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", rows)
    with pytest.raises(SourceDataError) as info:
        SqlSource(conn, "SELECT id FROM t").check_primary_key("id")
    assert str(info.value).endswith(expected)


def test_the_key_check_lists_a_few_duplicates_and_counts_the_rest() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i % 40,) for i in range(100)] + [(None,)])
    with pytest.raises(SourceDataError) as info:
        SqlSource(conn, "SELECT id FROM t").check_primary_key("id", sample=3)
    message = str(info.value)
    assert "1 row(s) have a NULL id" in message and "40 duplicate id value(s)" in message
    assert message.count(" rows)") == 3


def test_a_unique_key_passes() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
    SqlSource(conn, "SELECT id FROM t").check_primary_key("id")  # raises on a problem
    conn.execute("INSERT INTO t VALUES (9)")
    with pytest.raises(SourceDataError):
        SqlSource(conn, "SELECT id FROM t").check_primary_key("id")
