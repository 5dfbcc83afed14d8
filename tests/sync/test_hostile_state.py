"""Hostile rows and state: one bad key fails one row, a damaged state row is held, a damaged table stops early.

Each test sets up a class of damage the engine cannot have written itself (a hand-edited status, a NUL in a key,
a column dropped from a state table) and checks that nothing is sent twice and nothing is lost.
"""

from __future__ import annotations

import decimal
import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest

from airflow_provider_attentive.client import AttentiveTransport
from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.errors import SourceDataError, SyncConfigError
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.values import mask_key
from tests.helpers.engine import RunSync, sync_engine
from tests.helpers.objects import attributes, events, subs
from tests.helpers.phones import phone
from tests.helpers.postgres import pg_connect
from tests.helpers.records import request_count
from tests.helpers.warehouse import create_customers, create_orders, set_members

SUBS_SQL = "SELECT phone, email FROM members"


def _state(conn: Any, sync_id: str = "test.sync") -> dict[str, tuple[Any, ...]]:
    rows = conn.execute("SELECT pk, status, member, row_hash FROM attentive_sync_state WHERE sync_id = ?", (sync_id,))
    return {r[0]: r[1:] for r in rows.fetchall()}


# ------------------------------------------------------------------------------- 1. unknown statuses ----


@pytest.mark.parametrize("status", ["weird", None, "OK", "sent"])
def test_an_attribute_row_with_an_unknown_status_is_held_not_resent(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator, status: str | None
) -> None:
    create_customers(warehouse, 10)
    run_sync(attributes(), warehouse, "SELECT * FROM customers")
    warehouse.execute("UPDATE attentive_sync_state SET status = ? WHERE pk = '3'", (status,))
    warehouse.execute("UPDATE customers SET loyalty_tier = 'platinum'")  # every row changed
    warehouse.commit()

    again = run_sync(attributes(), warehouse, "SELECT * FROM customers")

    assert again["held_unknown_state"] == 1 and again["succeeded"]["changed"] == 9
    assert request_count(attentive_emulator, "attributes") == 10 + 9
    assert any(e["key"] == "3" and "held" in e["reason"] for e in again["errors"])
    assert _state(warehouse)["3"][0] == status  # left for a person to fix, not overwritten


def test_an_event_with_an_unknown_status_is_never_sent_again(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    create_orders(warehouse, 5)
    run_sync(events(), warehouse, "SELECT id, phone FROM orders")
    warehouse.execute("UPDATE attentive_sync_state SET status = NULL WHERE pk = '2'")
    warehouse.commit()

    again = run_sync(events(), warehouse, "SELECT id, phone FROM orders")

    assert again["held_unknown_state"] == 1 and again["unchanged"] == 4
    assert request_count(attentive_emulator, "events") == 5


@pytest.mark.parametrize("column, value", [("status", "delivered"), ("status", None), ("member", "member?")])
def test_a_subscriber_with_an_unknown_state_is_neither_subscribed_again_nor_unsubscribed(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator, column: str, value: str | None
) -> None:
    set_members(warehouse, range(6))
    run_sync(subs(), warehouse, SUBS_SQL, mode="mirror")
    warehouse.execute(f"UPDATE attentive_sync_state SET {column} = ? WHERE pk = ?", (value, phone(2)))
    warehouse.commit()

    again = run_sync(subs(), warehouse, SUBS_SQL, mode="mirror")
    assert again["held_unknown_state"] == 1
    assert request_count(attentive_emulator, "subscribe") == 6  # no repeat "already subscribed" text

    set_members(warehouse, [0, 1, 3, 4, 5])  # the damaged one leaves the model
    gone = run_sync(subs(), warehouse, SUBS_SQL, mode="mirror", max_removals=1.0)
    assert request_count(attentive_emulator, "unsubscribe") == 0
    assert attentive_emulator.client.stats()["repeat_subscribes"] == 0
    if column == "status":
        assert gone["held_unknown_state"] == 1
        assert any(e["key"] == mask_key(phone(2)) for e in gone["errors"])


def test_a_damaged_identity_holds_that_member_alone(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    set_members(warehouse, range(6))
    run_sync(subs(), warehouse, SUBS_SQL, mode="mirror")
    warehouse.execute("UPDATE attentive_sync_state SET identity = '{\"phone\": ' WHERE pk = ?", (phone(1),))
    warehouse.commit()
    set_members(warehouse, [2, 3, 4, 5])  # 0 and 1 leave

    summary = run_sync(subs(), warehouse, SUBS_SQL, mode="mirror", max_removals=1.0)

    assert summary["succeeded"]["removed"] == 1 and summary["held_unknown_state"] == 1
    assert request_count(attentive_emulator, "unsubscribe") == 1
    held = [e for e in summary["errors"] if e["key"] == mask_key(phone(1))]
    assert held and "attentive_sync_state" in held[0]["reason"]


# ---------------------------------------------------------------------------- 2. one bad key, one row ----


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no text for this one")


def _hostile(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """What a driver could hand back: keys and values no text or JSON can be made of, in rows 0-4."""
    hostile_keys: dict[int, Any] = {
        0: "a\x00b",
        1: "lone \udc80 surrogate",
        2: decimal.Decimal("sNaN"),
        3: 10**5000,
    }
    out = []
    for row in rows:
        row = list(row)
        i = row[0]
        if i in hostile_keys:
            row[0] = hostile_keys[i]
        if i == 4:
            row[4] = decimal.Decimal("1E+5000")  # the ltv attribute: a number no JSON reader takes
        if i == 5:
            row[3] = _Unprintable()  # the loyalty_tier attribute: fails even to be hashed
        out.append(row)
    return out


class HostileSource(SqlSource):
    def __init__(self, conn: Any, sql: str, *, chunk_size: int = 1000) -> None:
        super().__init__(conn, sql, chunk_size=chunk_size, convert=_hostile)


@pytest.mark.parametrize("state_db", ["sqlite", "postgres"])
def test_one_bad_key_or_value_fails_its_row_and_the_rest_is_delivered(
    warehouse: sqlite3.Connection,
    transport: AttentiveTransport,
    attentive_emulator: Emulator,
    request: pytest.FixtureRequest,
    state_db: str,
) -> None:
    create_customers(warehouse, 40)
    state: Any = warehouse
    placeholder = "?"
    if state_db == "postgres":  # PostgreSQL refuses NUL characters and lone surrogates in text
        state = pg_connect(request.getfixturevalue("pg_database"))
        placeholder = "%s"

    def run() -> dict[str, Any]:
        engine = sync_engine(
            attributes(),
            warehouse,
            "SELECT customer_id, phone, email, loyalty_tier, ltv FROM customers",
            sender=transport,
            state_conn=state,
            placeholder=placeholder,
            source_type=HostileSource,
            check_primary_key=False,  # the warehouse's own key check sees the clean column
            max_failed_ratio=0.5,
        )
        return engine.run()

    summary = run()
    assert summary["invalid"] == 6 and summary["succeeded"]["added"] == 34
    assert summary["failed"] == {"added": 0, "changed": 0, "removed": 0}
    reasons = " | ".join(e["reason"] for e in summary["errors"])
    for words in ("NUL", "surrogate", "cannot be read", "too large"):
        assert words in reasons, reasons
    assert request_count(attentive_emulator, "attributes") == 34

    again = run()  # invalid rows stay invalid; they are not failed-and-retried forever
    assert again["invalid"] == 6 and again["unchanged"] == 34 and again["requests"] == 0
    if state_db == "postgres":
        state.close()


# --------------------------------------------------------------------------- 6. a damaged state table ----


@pytest.mark.parametrize("table, column", [("attentive_sync_state", "identity"), ("attentive_sync_log", "message")])
def test_a_state_table_missing_a_column_stops_the_run_before_anything_is_sent(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator, table: str, column: str
) -> None:
    create_customers(warehouse, 5)
    run_sync(attributes(), warehouse, "SELECT * FROM customers")
    warehouse.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    warehouse.execute("UPDATE customers SET ltv = ltv + 1")
    warehouse.commit()

    for dry_run in (True, False):
        with pytest.raises(SyncConfigError) as exc:
            run_sync(attributes(), warehouse, "SELECT * FROM customers", dry_run=dry_run)
        assert table in str(exc.value) and column in str(exc.value) and "ADD COLUMN" in str(exc.value)
    assert request_count(attentive_emulator, "attributes") == 5


# --------------------------------------------------------------------- 7. driver errors keep values out ----


def _refuse_row_3(chunk: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    for row in chunk:
        if row[0] == 3:  # a driver's type conversion failing on a value, and quoting it, as drivers do
            raise ValueError(f"invalid literal for int() with base 10: {row[1]!r}")
    return list(chunk)


class RefusingSource(SqlSource):
    def __init__(self, conn: Any, sql: str, *, chunk_size: int = 1000) -> None:
        super().__init__(conn, sql, chunk_size=chunk_size, convert=_refuse_row_3)


def test_a_driver_error_while_streaming_names_the_rows_never_the_value(
    warehouse: sqlite3.Connection, transport: AttentiveTransport
) -> None:
    create_customers(warehouse, 10)
    engine = sync_engine(
        attributes(), warehouse, "SELECT * FROM customers", sender=transport, source_type=RefusingSource, chunk=4
    )
    with pytest.raises(SourceDataError) as exc:
        engine.run()
    message = str(exc.value)
    assert "rows 1-4" in message and "ValueError" in message
    assert phone(3) not in message and phone(3)[2:] not in message and exc.value.__suppress_context__


def test_a_postgres_cast_error_mid_stream_does_not_quote_the_phone(
    request: pytest.FixtureRequest, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    conn = pg_connect(request.getfixturevalue("pg_database"))
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE customers (customer_id INTEGER, phone TEXT, loyalty_tier TEXT)")
        rows = [(i, phone(i), "gold") for i in range(30)] + [(30, "+1 (415) 555-0199 x", "gold")]
        cur.executemany("INSERT INTO customers VALUES (%s, %s, %s)", rows)
    conn.commit()
    # The cast fails on the last row, when the server-side cursor reaches it, and PostgreSQL quotes the value.
    sql = "SELECT customer_id, phone, loyalty_tier, replace(phone, '+', '')::bigint AS digits FROM customers"
    engine = sync_engine(attributes(), conn, sql, sender=transport, placeholder="%s", chunk=10, check_primary_key=False)
    with pytest.raises(SourceDataError) as exc:
        engine.run()
    message = str(exc.value)
    assert "rows " in message and "of the model" in message, message
    assert "415" not in message and "0199" not in message and exc.value.__suppress_context__, message
    conn.close()


# --------------------------------------------------------- 8. a subscribe applied, then answered 5xx ----


@pytest.mark.parametrize("can_read", [True, False])
def test_a_subscribe_answered_5xx_after_it_was_applied_is_never_sent_twice(
    warehouse: sqlite3.Connection, attentive_emulator: Emulator, can_read: bool
) -> None:
    from tests.helpers.engine import engine_runner
    from tests.helpers.engine import transport as make_transport

    scopes = ["subscriptions:write", "attributes:write"] + (["subscriptions:read"] if can_read else [])
    attentive_emulator.client.add_key("gateway", scopes=scopes)
    set_members(warehouse, range(20))
    attentive_emulator.client.set_faults(apply_then_5xx_rate=1.0, endpoints=["subscribe"])
    with make_transport(attentive_emulator.url, api_key="gateway") as sender:
        run = engine_runner(sender)
        first = run(subs(), warehouse, SUBS_SQL, mode="add", max_failed_ratio=1.0)
        attentive_emulator.client.clear_faults()
        second = run(subs(), warehouse, SUBS_SQL, mode="add", max_failed_ratio=1.0)

    stats = attentive_emulator.client.stats()
    assert stats["endpoints"]["subscribe"]["requests"] == 20 and stats["repeat_subscribes"] == 0
    if can_read:  # resolved by the eligibility check: they are subscribed, and recorded so
        assert _state(warehouse, "test.sync")[phone(3)][:2] == ("ok", "subscribed")
        assert second["unchanged"] == 20
    else:  # reported, neither resent nor undone
        assert first["in_doubt"] == 20 and second["in_doubt"] == 20
