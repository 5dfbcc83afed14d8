"""The sync engine with a real PostgreSQL as the source and as the state store (issue: two SQL dialects).

The scenarios of ``test_attributes.py`` run against a throwaway PostgreSQL server (``tests/helpers/postgres.py``),
with the model and the state tables in the same database (``state_conn_id`` defaults to the warehouse) and,
the hardest case for transactions, on the same connection; the operator opens a second connection, which
one parametrised case covers. The source table uses real PostgreSQL types
so that Decimal, timezone-aware datetime and boolean values travel from psycopg2 to Attentive's JSON. Two
tests mix dialects (SQLite source with PostgreSQL state and the reverse), and one runs a subscriptions
mirror with its membership tracked in PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.client import LimiterRegistry
from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.errors import SourceDataError, SyncLockedError, TooManyFailures
from airflow_provider_attentive.sync.state import StateStore
from tests.helpers.engine import RunSync, ops, transport
from tests.helpers.objects import attributes, subs
from tests.helpers.phones import phone
from tests.helpers.postgres import pg_connect
from tests.helpers.records import bodies, request_count
from tests.helpers.warehouse import create_customers

pytestmark = pytest.mark.postgres

SQL = "SELECT customer_id, phone, email, loyalty_tier, ltv, joined_at, vip FROM customers"
JOINED = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)


@pytest.fixture
def pg(pg_database: dict[str, Any]) -> Iterator[Any]:
    """A psycopg2 connection to this test's fresh database (the warehouse, and by default the state)."""
    conn = pg_connect(pg_database)
    yield conn
    conn.close()


@pytest.fixture
def pg_sync(run_sync: RunSync) -> RunSync:
    """``run_sync`` with psycopg2's parameter marker for a PostgreSQL state store."""

    def run(obj: Any, conn: Any, sql: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("placeholder", "%s")
        return run_sync(obj, conn, sql, **kwargs)

    return run


def execute(conn: Any, sql: str, params: Sequence[Any] | None = None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, params)
    conn.commit()


def query(conn: Any, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = [tuple(r) for r in cur.fetchall()]
    conn.commit()
    return rows


def ltv(i: int) -> Decimal:
    return (Decimal(i) * Decimal("10.5")).quantize(Decimal("0.01"))


def create_pg_customers(conn: Any, n: int) -> None:
    """``customers`` with real PostgreSQL types: NUMERIC -> Decimal, TIMESTAMPTZ -> aware datetime, BOOLEAN."""
    execute(
        conn,
        "CREATE TABLE customers (customer_id INTEGER, phone TEXT, email TEXT, loyalty_tier TEXT, "
        "ltv NUMERIC(10, 2), joined_at TIMESTAMPTZ, vip BOOLEAN)",
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    i,
                    phone(i),
                    f"user{i}@example.com",
                    ("gold", "silver")[i % 2],
                    ltv(i),
                    JOINED + dt.timedelta(days=i),
                    i % 3 == 0,
                )
                for i in range(n)
            ],
        )
    conn.commit()


def state_counts(conn: Any, sync_id: str = "test.sync", *, column: str = "status") -> dict[str, int]:
    rows = query(
        conn,
        f"SELECT {column}, COUNT(*) FROM attentive_sync_state WHERE sync_id = %s GROUP BY {column}",
        (sync_id,),
    )
    return {k: int(v) for k, v in rows}


def pg_tables(conn: Any) -> set[str]:
    return {r[0] for r in query(conn, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}


# --- PostgreSQL as source and state, on one connection -------------------------------------------------


def test_first_run_sends_every_row_with_the_exact_payload(
    attentive_emulator: Emulator, pg: Any, pg_sync: RunSync
) -> None:
    create_pg_customers(pg, 25)
    execute(pg, "UPDATE customers SET loyalty_tier = NULL WHERE customer_id = 5")
    summary = pg_sync(attributes(), pg, SQL, chunk=10, batch_size=4)
    assert summary["rows_read"] == 25
    assert ops(summary, "planned") == (25, 0, 0) and ops(summary, "succeeded") == (25, 0, 0)
    assert summary["invalid"] == 0 and summary["requests"] == 25
    sent = {b["user"]["phone"]: b for b in bodies(attentive_emulator, "attributes")}
    assert len(sent) == 25
    # NUMERIC(10,2) 31.50 -> 31.5; TIMESTAMPTZ -> ISO 8601 with offset; BOOLEAN -> true/false.
    assert sent[phone(3)] == {
        "user": {"phone": phone(3), "email": "user3@example.com"},
        "properties": {"loyalty_tier": "silver", "ltv": 31.5, "joined_at": "2024-05-04T12:30:00+00:00", "vip": True},
    }
    # A whole NUMERIC (42.00) is sent as the JSON integer 42; NULL columns are left out, never null or "".
    assert sent[phone(4)]["properties"] == {
        "loyalty_tier": "gold",
        "ltv": 42,
        "joined_at": "2024-05-05T12:30:00+00:00",
        "vip": False,
    }
    assert type(sent[phone(4)]["properties"]["ltv"]) is int
    assert sent[phone(5)]["properties"] == {"ltv": 52.5, "joined_at": "2024-05-06T12:30:00+00:00", "vip": False}
    assert attentive_emulator.client.attributes()[phone(0)] == {
        "loyalty_tier": "gold",
        "ltv": 0,
        "joined_at": "2024-05-01T12:30:00+00:00",
        "vip": True,
    }

    # The state tables say what the summary says.
    assert state_counts(pg) == {"ok": 25}
    assert query(
        pg,
        "SELECT COUNT(*) FROM attentive_sync_state WHERE row_hash IS NOT NULL AND row_hash = attempt_hash "
        "AND op = 'added' AND http_status = 200 AND run_id = %s",
        (summary["run_id"],),
    ) == [(25,)]
    assert query(pg, "SELECT status, operation, COUNT(*) FROM attentive_sync_log GROUP BY status, operation") == [
        ("ok", "added", 25)
    ]
    assert query(pg, "SELECT COUNT(*) FROM attentive_sync_lock") == [(0,)]


@pytest.mark.parametrize("own_state_conn", [False, True], ids=["one-connection", "two-connections"])
def test_second_run_sends_nothing_and_changed_rows_are_sent_alone(
    attentive_emulator: Emulator, pg: Any, pg_database: dict[str, Any], pg_sync: RunSync, own_state_conn: bool
) -> None:
    # One connection: the named cursor must survive the state store's commits between chunks (small chunks
    # and batches make sure there are several). Two connections to one database: what the operator does.
    state = pg_connect(pg_database) if own_state_conn else pg
    create_pg_customers(pg, 100)
    first = pg_sync(attributes(), pg, SQL, state_conn=state, chunk=30, batch_size=20)
    assert ops(first, "succeeded") == (100, 0, 0)
    again = pg_sync(attributes(), pg, SQL, state_conn=state, chunk=30, batch_size=20)
    assert again["unchanged"] == 100 and ops(again, "planned") == (0, 0, 0) and again["requests"] == 0
    assert request_count(attentive_emulator, "attributes") == 100

    changed_ids = list(range(0, 100, 10))
    execute(pg, "UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id = ANY(%s)", (changed_ids,))
    third = pg_sync(attributes(), pg, SQL, state_conn=state, chunk=30, batch_size=20)
    assert ops(third, "planned") == (0, 10, 0) and ops(third, "succeeded") == (0, 10, 0)
    assert third["unchanged"] == 90 and third["requests"] == 10
    latest = bodies(attentive_emulator, "attributes")[100:]
    assert sorted(b["user"]["phone"] for b in latest) == sorted(phone(i) for i in changed_ids)
    assert all(b["properties"]["loyalty_tier"] == "platinum" for b in latest)
    assert state_counts(pg) == {"ok": 100}
    assert state_counts(pg, column="op") == {"added": 90, "changed": 10}
    if own_state_conn:
        state.close()


def test_source_connection_in_autocommit_mode(attentive_emulator: Emulator, pg: Any, pg_sync: RunSync) -> None:
    # psycopg2 refuses a plain named cursor outside a transaction; the source's cursor is WITH HOLD.
    create_pg_customers(pg, 30)
    pg.autocommit = True
    first = pg_sync(attributes(), pg, SQL, chunk=7, batch_size=5)
    assert ops(first, "succeeded") == (30, 0, 0)
    again = pg_sync(attributes(), pg, SQL, chunk=7)
    assert again["unchanged"] == 30 and again["requests"] == 0
    assert state_counts(pg) == {"ok": 30}


def test_rejected_row_is_reported_and_not_retried_until_it_changes(
    attentive_emulator: Emulator, pg: Any, pg_sync: RunSync
) -> None:
    if not hasattr(attentive_emulator.client, "set_enumerated_attributes"):
        pytest.skip("the emulator client has no set_enumerated_attributes() yet (enumerated attributes)")
    attentive_emulator.client.set_enumerated_attributes({"loyalty_tier": ["gold", "silver", "platinum"]})
    create_pg_customers(pg, 20)
    execute(pg, "UPDATE customers SET loyalty_tier = 'diamond' WHERE customer_id = 7")
    first = pg_sync(attributes(), pg, SQL, max_failed_ratio=0.5)
    assert first["rejected"] == 1 and ops(first, "failed") == (1, 0, 0) and ops(first, "succeeded") == (19, 0, 0)
    assert first["errors"][0]["key"] == "7" and first["errors"][0]["http_status"] == 400
    assert state_counts(pg) == {"ok": 19, "rejected": 1}
    assert query(pg, "SELECT pk, http_status, row_hash FROM attentive_sync_state WHERE status = 'rejected'") == [
        ("7", 400, None)
    ]

    second = pg_sync(attributes(), pg, SQL, max_failed_ratio=0.5)
    assert second["requests"] == 0 and second["skipped_rejected"] == 1

    execute(pg, "UPDATE customers SET loyalty_tier = 'gold' WHERE customer_id = 7")
    third = pg_sync(attributes(), pg, SQL)
    assert ops(third, "succeeded") == (1, 0, 0) and third["requests"] == 1
    assert state_counts(pg) == {"ok": 20}


def test_transient_failure_is_retried_on_the_next_run(attentive_emulator: Emulator, pg: Any, pg_sync: RunSync) -> None:
    create_pg_customers(pg, 10)
    attentive_emulator.client.set_faults(error_rate=1.0, endpoints=["attributes"], seed=3)
    flaky = transport(attentive_emulator.url, max_attempts=2)
    with flaky, pytest.raises(TooManyFailures) as info:
        pg_sync(attributes(), pg, SQL, sender=flaky)
    assert ops(info.value.summary, "failed") == (10, 0, 0) and info.value.summary["rejected"] == 0
    assert state_counts(pg) == {"failed": 10}
    assert query(pg, "SELECT COUNT(*) FROM attentive_sync_state WHERE row_hash IS NULL") == [(10,)]
    assert query(pg, "SELECT COUNT(*) FROM attentive_sync_lock") == [(0,)]

    attentive_emulator.client.clear_faults()
    healed = pg_sync(attributes(), pg, SQL)
    assert ops(healed, "planned") == (10, 0, 0) and ops(healed, "succeeded") == (10, 0, 0)
    assert len(attentive_emulator.client.attributes()) == 10
    assert state_counts(pg) == {"ok": 10}


def test_national_phones_use_default_region_and_garbage_is_reported(
    attentive_emulator: Emulator, pg: Any, pg_sync: RunSync
) -> None:
    execute(pg, "CREATE TABLE p (id INTEGER, phone TEXT, tier TEXT)")
    with pg.cursor() as cur:
        cur.executemany(
            "INSERT INTO p VALUES (%s, %s, 'gold')", [(1, "(415) 555-0123"), (2, "415.555.0124"), (3, "not a phone")]
        )
    pg.commit()
    summary = pg_sync(attributes(primary_key="id", default_region="US"), pg, "SELECT * FROM p", max_failed_ratio=0.5)
    assert summary["succeeded"]["added"] == 2 and summary["invalid"] == 1
    assert summary["errors"] == [{"key": "3", "reason": "phone could not be parsed (not a number)"}]
    assert sorted(b["user"]["phone"] for b in bodies(attentive_emulator, "attributes")) == [
        "+14155550123",
        "+14155550124",
    ]
    assert state_counts(pg) == {"ok": 2}  # invalid rows are logged, not given a state row
    assert query(pg, "SELECT pk, status FROM attentive_sync_log WHERE status = 'invalid'") == [("3", "invalid")]

    strict = pg_sync(attributes(primary_key="id"), pg, "SELECT * FROM p", sync_id="strict", max_failed_ratio=1.0)
    assert strict["invalid"] == 3 and strict["requests"] == 0


def test_duplicate_or_null_keys_fail_before_anything_is_sent(
    attentive_emulator: Emulator, pg: Any, pg_sync: RunSync
) -> None:
    create_pg_customers(pg, 30)
    execute(pg, "INSERT INTO customers (customer_id, phone, loyalty_tier) VALUES (5, %s, 'gold')", (phone(99),))
    execute(pg, "INSERT INTO customers (customer_id, phone, loyalty_tier) VALUES (NULL, %s, 'gold')", (phone(98),))
    with pytest.raises(SourceDataError) as info:
        pg_sync(attributes(), pg, SQL)
    assert "'5' (2 rows)" in str(info.value) and "NULL" in str(info.value)
    assert request_count(attentive_emulator, "attributes") == 0
    assert query(pg, "SELECT COUNT(*) FROM attentive_sync_state") == [(0,)]
    assert query(pg, "SELECT COUNT(*) FROM attentive_sync_lock") == [(0,)]


def test_dry_run_sends_nothing_and_writes_nothing(attentive_emulator: Emulator, pg: Any, pg_sync: RunSync) -> None:
    create_pg_customers(pg, 12)
    preview = pg_sync(attributes(), pg, SQL, dry_run=True)
    assert preview["dry_run"] is True
    assert ops(preview, "planned") == (12, 0, 0) and ops(preview, "succeeded") == (0, 0, 0)
    assert len(preview["samples"]) == 5 and "*" in preview["samples"][0]["user"]["phone"]
    assert request_count(attentive_emulator, "attributes") == 0
    assert pg_tables(pg) == {"customers"}

    pg_sync(attributes(), pg, SQL)
    execute(pg, "UPDATE customers SET ltv = -1 WHERE customer_id < 3")
    before = query(pg, "SELECT COUNT(*), MAX(updated_at) FROM attentive_sync_state")
    log_before = query(pg, "SELECT COUNT(*) FROM attentive_sync_log")
    preview = pg_sync(attributes(), pg, SQL, dry_run=True)
    assert ops(preview, "planned") == (0, 3, 0) and preview["unchanged"] == 9
    assert query(pg, "SELECT COUNT(*), MAX(updated_at) FROM attentive_sync_state") == before
    assert query(pg, "SELECT COUNT(*) FROM attentive_sync_log") == log_before
    assert request_count(attentive_emulator, "attributes") == 12


def test_upper_case_column_names_still_map(attentive_emulator: Emulator, pg: Any, pg_sync: RunSync) -> None:
    # Quoted aliases keep their case in PostgreSQL, as Snowflake/Oracle columns come back upper-case; the
    # primary-key check must quote "CUSTOMER_ID" (unquoted, PostgreSQL would fold it to customer_id).
    create_pg_customers(pg, 6)
    upper = (
        'SELECT customer_id AS "CUSTOMER_ID", phone AS "PHONE", email AS "EMAIL", loyalty_tier AS "LOYALTY_TIER" '
        "FROM customers"
    )
    summary = pg_sync(attributes(), pg, upper)
    assert ops(summary, "succeeded") == (6, 0, 0)
    sent = {b["user"]["phone"]: b for b in bodies(attentive_emulator, "attributes")}
    assert sent[phone(1)] == {
        "user": {"phone": phone(1), "email": "user1@example.com"},
        "properties": {"LOYALTY_TIER": "silver"},
    }

    mapped = pg_sync(attributes(mapping={"phone": "phone", "loyalty_tier": "tier"}), pg, upper, sync_id="test.mapped")
    assert ops(mapped, "succeeded") == (6, 0, 0)
    assert bodies(attentive_emulator, "attributes")[-1]["properties"].keys() == {"tier"}
    assert state_counts(pg, "test.mapped") == {"ok": 6}
    assert {r[0] for r in query(pg, "SELECT pk FROM attentive_sync_state WHERE sync_id = 'test.mapped'")} == {
        str(i) for i in range(6)
    }


def test_a_failed_source_query_does_not_leave_the_lock_held(
    attentive_emulator: Emulator, pg: Any, pg_sync: RunSync
) -> None:
    # On PostgreSQL a failed statement aborts the transaction: everything after it on the same connection
    # fails until a rollback, including releasing the lock in the engine's ``finally``.
    create_pg_customers(pg, 5)
    with pytest.raises(Exception, match="no_such_column"):
        pg_sync(attributes(), pg, "SELECT customer_id, phone, no_such_column FROM customers")
    assert query(pg, "SELECT COUNT(*) FROM attentive_sync_lock") == [(0,)]
    summary = pg_sync(attributes(), pg, SQL, lock_wait_s=0.5)
    assert ops(summary, "succeeded") == (5, 0, 0)


def test_a_live_lock_in_postgres_blocks_a_second_run(attentive_emulator: Emulator, pg: Any, pg_sync: RunSync) -> None:
    create_pg_customers(pg, 3)
    pg_sync(attributes(), pg, SQL)  # creates the tables
    far = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    execute(
        pg,
        "INSERT INTO attentive_sync_lock (sync_id, holder, acquired_at, expires_at) VALUES (%s, %s, %s, %s)",
        ("test.sync", "other-run:1", far, far),
    )
    with pytest.raises(SyncLockedError, match="other-run:1"):
        pg_sync(attributes(), pg, SQL, lock_wait_s=0.2)
    # The failed INSERT of the lock row was rolled back: the connection is still usable.
    assert query(pg, "SELECT holder FROM attentive_sync_lock") == [("other-run:1",)]
    execute(pg, "UPDATE attentive_sync_lock SET expires_at = '2000-01-01T00:00:00.000000Z'")
    taken_over = pg_sync(attributes(), pg, SQL, lock_wait_s=0.2)
    assert taken_over["unchanged"] == 3
    assert query(pg, "SELECT COUNT(*) FROM attentive_sync_lock") == [(0,)]


# --- mixed dialects ---------------------------------------------------------------------------------------


def test_sqlite_source_with_postgres_state(
    attentive_emulator: Emulator, pg: Any, run_sync: RunSync, tmp_path: Path
) -> None:
    warehouse = sqlite3.connect(tmp_path / "warehouse.db")
    try:
        create_customers(warehouse, 15)
        sql = "SELECT customer_id, phone, email, loyalty_tier, ltv FROM customers"
        first = run_sync(attributes(), warehouse, sql, state_conn=pg, placeholder="%s", chunk=4, batch_size=3)
        assert ops(first, "succeeded") == (15, 0, 0)
        (body,) = [b for b in bodies(attentive_emulator, "attributes") if b["user"]["phone"] == phone(3)]
        assert body["properties"] == {"loyalty_tier": "silver", "ltv": 31.5}
        again = run_sync(attributes(), warehouse, sql, state_conn=pg, placeholder="%s", chunk=4)
        assert again["unchanged"] == 15 and again["requests"] == 0

        warehouse.execute("UPDATE customers SET ltv = 0.5 WHERE customer_id IN (1, 2)")
        warehouse.commit()
        third = run_sync(attributes(), warehouse, sql, state_conn=pg, placeholder="%s", chunk=4)
        assert ops(third, "succeeded") == (0, 2, 0) and third["requests"] == 2
        assert state_counts(pg) == {"ok": 15}
        tables = warehouse.execute("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'attentive_%'").fetchone()
        assert tables == (0,)
    finally:
        warehouse.close()


def test_postgres_source_with_sqlite_state(
    attentive_emulator: Emulator, pg: Any, run_sync: RunSync, tmp_path: Path
) -> None:
    create_pg_customers(pg, 15)
    state = sqlite3.connect(tmp_path / "state.db")
    try:
        first = run_sync(attributes(), pg, SQL, state_conn=state, placeholder="?", chunk=4, batch_size=3)
        assert ops(first, "succeeded") == (15, 0, 0)
        again = run_sync(attributes(), pg, SQL, state_conn=state, placeholder="?", chunk=4)
        assert again["unchanged"] == 15 and again["requests"] == 0

        execute(pg, "UPDATE customers SET vip = NOT vip WHERE customer_id IN (1, 2)")
        third = run_sync(attributes(), pg, SQL, state_conn=state, placeholder="?", chunk=4)
        assert ops(third, "succeeded") == (0, 2, 0)
        assert [b["properties"]["vip"] for b in bodies(attentive_emulator, "attributes")[-2:]] == [True, True]
        assert state.execute("SELECT COUNT(*) FROM attentive_sync_state WHERE status = 'ok'").fetchone() == (15,)
        assert pg_tables(pg) == {"customers"}
    finally:
        state.close()


# --- subscriptions mirror with its membership in PostgreSQL --------------------------------------------


def test_subscriptions_mirror_tracks_members_in_postgres(
    attentive_emulator: Emulator, pg: Any, pg_sync: RunSync
) -> None:
    # Attentive's defaults are 10 subscribes/s and 5 unsubscribes/s; raise both (in the emulator and in a
    # transport with its own limiter registry, since transports of one key share the lowest rate) so this
    # takes well under a second instead of ~6 s.
    fast = {"subscribe": 100, "unsubscribe": 100}
    attentive_emulator.client.set_limits(fast)
    fast_transport = transport(attentive_emulator.url, rate_limits=fast, registry=LimiterRegistry())
    execute(pg, "CREATE TABLE audience (phone TEXT PRIMARY KEY, email TEXT)")

    def set_audience(ids: list[int]) -> None:
        execute(pg, "DELETE FROM audience")
        with pg.cursor() as cur:
            cur.executemany("INSERT INTO audience VALUES (%s, NULL)", [(phone(i),) for i in ids])
        pg.commit()

    def mirror() -> dict[str, Any]:
        return pg_sync(
            subs(), pg, "SELECT phone, email FROM audience", mode="mirror", sender=fast_transport, batch_size=10
        )

    with fast_transport:
        set_audience(list(range(40)))
        first = mirror()
        assert ops(first, "succeeded") == (40, 0, 0)
        assert state_counts(pg, column="member") == {"subscribed": 40}

        set_audience([i for i in range(40) if i not in (3, 9, 17, 25, 31)] + [100, 101, 102])
        second = mirror()
        assert ops(second, "planned") == (3, 0, 5) and ops(second, "succeeded") == (3, 0, 5)
        assert second["unchanged"] == 35

    assert request_count(attentive_emulator, "subscribe") == 43
    assert request_count(attentive_emulator, "unsubscribe") == 5
    assert attentive_emulator.client.stats()["repeat_subscribes"] == 0
    assert state_counts(pg, column="member") == {"subscribed": 38, "unsubscribed": 5}
    assert state_counts(pg) == {"ok": 43}
    left = query(pg, "SELECT pk FROM attentive_sync_state WHERE member = 'unsubscribed' ORDER BY pk")
    assert [r[0] for r in left] == sorted(phone(i) for i in (3, 9, 17, 25, 31))
    unsubscribed = [b["user"]["phone"] for b in bodies(attentive_emulator, "unsubscribe")]
    assert sorted(unsubscribed) == sorted(phone(i) for i in (3, 9, 17, 25, 31))


def test_state_tables_in_a_schema_get_their_status_index(pg: Any) -> None:
    execute(pg, "CREATE SCHEMA crm")
    StateStore(pg, placeholder="%s", schema="crm").ensure_tables()
    rows = query(pg, "SELECT schemaname, indexdef FROM pg_indexes WHERE indexname = 'attentive_sync_state_status'")
    assert rows == [
        ("crm", "CREATE INDEX attentive_sync_state_status ON crm.attentive_sync_state USING btree (sync_id, status)")
    ]
