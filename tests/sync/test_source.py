"""How often, and how, a run reads the model: warehouses bill by query and by columns scanned."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.errors import SourceDataError, SyncConfigError
from airflow_provider_attentive.sync.objects import AttributesType
from airflow_provider_attentive.sync.source import SqlSource
from tests.helpers.engine import RunSync
from tests.helpers.objects import subs
from tests.helpers.phones import phone
from tests.helpers.postgres import pg_connect
from tests.helpers.warehouse import create_customers, set_members


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
    assert guard == [f'SELECT "phone" FROM (\n{sql}\n) attentive_src'], seen
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


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT customer_id, phone, loyalty_tier FROM customers -- loyalty model",
        "SELECT customer_id, phone, loyalty_tier FROM customers;\n-- end of model\n",
        "SELECT customer_id, phone, loyalty_tier FROM customers; /* end */ -- of model",
        "/* loyalty */ SELECT customer_id, phone, loyalty_tier FROM customers;;",
    ],
)
def test_a_model_ending_in_comments_or_a_semicolon_syncs(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator, sql: str
) -> None:
    create_customers(warehouse, 3)
    summary = run_sync(AttributesType(primary_key="customer_id", mapping=None, default_region=None), warehouse, sql)
    assert summary["succeeded"]["added"] == 3 and summary["invalid"] == 0
    assert attentive_emulator.client.attributes()[phone(2)] == {"loyalty_tier": "gold"}


def test_dashes_and_semicolons_inside_string_literals_are_kept(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 2)
    sql = "SELECT customer_id, phone, '--x;' AS note, 'a '';-- b' AS quoted FROM customers -- notes;"
    summary = run_sync(AttributesType(primary_key="customer_id", mapping=None, default_region=None), warehouse, sql)
    assert summary["succeeded"]["added"] == 2
    assert attentive_emulator.client.attributes()[phone(1)] == {"note": "--x;", "quoted": "a ';-- b"}


def test_a_model_that_cannot_run_is_a_config_error_naming_the_driver_error(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 2)
    with pytest.raises(SyncConfigError) as info:
        run_sync(
            AttributesType(primary_key="customer_id", mapping=None, default_region=None),
            warehouse,
            "SELECT customer_id, phone, loyalty_tier FROM custmers",
        )
    assert str(info.value).startswith("could not run the model: ")
    assert str(info.value).endswith("(OperationalError: no such table: custmers)")
    assert attentive_emulator.client.stats()["endpoints"]["attributes"]["requests"] == 0
    # Rolled back: the connection still serves the corrected model.
    summary = run_sync(
        AttributesType(primary_key="customer_id", mapping=None, default_region=None),
        warehouse,
        "SELECT customer_id, phone, loyalty_tier FROM customers",
    )
    assert summary["succeeded"]["added"] == 2


def test_a_model_of_two_statements_is_refused_before_anything_runs(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 2)
    with pytest.raises(SyncConfigError, match=r"must be one SELECT statement, .*: 'DELETE FROM customers'$"):
        run_sync(
            AttributesType(primary_key="customer_id", mapping=None, default_region=None),
            warehouse,
            "SELECT customer_id, phone, loyalty_tier FROM customers; DELETE FROM customers",
        )
    assert warehouse.execute("SELECT COUNT(*) FROM customers").fetchone() == (2,)
    assert attentive_emulator.client.stats()["endpoints"]["attributes"]["requests"] == 0


def test_a_typo_is_blamed_on_the_word_the_database_rejects(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    """The model runs wrapped (``SELECT * FROM (model)``), where SQLite would point at the wrapper's FROM; the
    model run alone names the misspelt word, and the subquery hint is left out: it is not the problem."""
    warehouse.execute("CREATE TABLE members (member_id INTEGER, phone TEXT)")
    obj = AttributesType(primary_key="member_id", mapping=None, default_region=None)
    with pytest.raises(SyncConfigError) as info:
        run_sync(obj, warehouse, "SELEC member_id, phone FROM members")
    assert str(info.value) == (
        'could not run the model: the database rejects the sql (OperationalError: near "SELEC": syntax error)'
    )
    with pytest.raises(SyncConfigError) as info:
        SqlSource(warehouse, "SELEC member_id FROM members").check_primary_key("member_id")
    assert str(info.value) == (
        'could not check the primary key: the database rejects the sql (OperationalError: near "SELEC": syntax error)'
    )


def test_a_model_that_runs_alone_but_not_as_a_subquery_is_told_so(warehouse: sqlite3.Connection) -> None:
    warehouse.execute("CREATE TABLE members (member_id INTEGER)")
    with pytest.raises(SyncConfigError) as info:
        SqlSource(warehouse, "PRAGMA table_info(members)").columns()
    assert str(info.value) == (
        "could not run the model: the sql runs alone but not as a subquery, which the sync wraps it in; it must "
        'be a single SELECT that can be used as a subquery (OperationalError: near "(": syntax error)'
    )


@pytest.mark.postgres
def test_postgres_blames_a_typo_on_the_word_and_reads_backslashes_its_own_way(pg_database: dict[str, Any]) -> None:
    """The model is run alone through a server-side cursor (declared, never fetched), after a rollback: the
    failed wrapper aborted the transaction. The connection serves the corrected model afterwards."""
    conn = pg_connect(pg_database)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE members (member_id INTEGER)")
        conn.commit()
        source = SqlSource(conn, "SELEC member_id FROM members")
        for check in (source.columns, lambda: source.check_primary_key("member_id")):
            with pytest.raises(SyncConfigError) as info:
                check()
            assert 'the database rejects the sql (SyntaxError: syntax error at or near "SELEC"' in str(info.value)
            assert "subquery" not in str(info.value)
        # 'C:\' is a whole string to PostgreSQL: the ; inside 'x;y' is no terminator, and nothing is refused.
        assert SqlSource(conn, "SELECT 'C:\\' AS path, 'x;y' AS note FROM members;").columns() == ["path", "note"]
        assert SqlSource(conn, "SELECT member_id FROM members").columns() == ["member_id"]
    finally:
        conn.close()


@pytest.mark.postgres
def test_postgres_streams_a_commented_model_and_recovers_from_a_typo(
    pg_database: dict[str, Any], run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    """PostgreSQL reads the model through a server-side cursor, and an error aborts the transaction of the
    connection the state shares: after the failed probe the same connection must still serve the next run."""
    conn = pg_connect(pg_database)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE customers (customer_id INTEGER, phone TEXT, loyalty_tier TEXT)")
            cur.executemany("INSERT INTO customers VALUES (%s, %s, 'gold')", [(i, phone(i)) for i in range(3)])
        conn.commit()
        obj = AttributesType(primary_key="customer_id", mapping=None, default_region=None)
        with pytest.raises(SyncConfigError, match=r"could not run the model: .*custmers"):
            run_sync(obj, conn, "SELECT customer_id, phone, loyalty_tier FROM custmers", placeholder="%s")
        sql = "SELECT customer_id, phone, loyalty_tier FROM customers; -- loyalty model\n/* end */"
        summary = run_sync(
            AttributesType(primary_key="customer_id", mapping=None, default_region=None), conn, sql, placeholder="%s"
        )
        assert summary["succeeded"]["added"] == 3
        assert attentive_emulator.client.attributes()[phone(2)] == {"loyalty_tier": "gold"}
    finally:
        conn.close()
