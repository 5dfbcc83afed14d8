"""The attributes sync against the emulator and a real SQLite warehouse (issue: sync engine + attributes)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.errors import SourceDataError, SyncConfigError, TooManyFailures
from tests.helpers.engine import RunSync, ops, transport
from tests.helpers.objects import attributes
from tests.helpers.phones import phone
from tests.helpers.records import bodies, request_count
from tests.helpers.warehouse import create_customers

SQL = "SELECT customer_id, phone, email, loyalty_tier, ltv FROM customers"


def test_first_run_sends_every_row_with_the_exact_payload(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 25)
    summary = run_sync(attributes(), warehouse, SQL)
    assert summary["rows_read"] == 25
    assert ops(summary, "planned") == (25, 0, 0)
    assert ops(summary, "succeeded") == (25, 0, 0)
    assert summary["invalid"] == 0 and summary["requests"] == 25
    sent = sorted(bodies(attentive_emulator, "attributes"), key=lambda b: b["user"]["phone"])
    assert sent[3] == {
        "user": {"phone": phone(3), "email": "user3@example.com"},
        "properties": {"loyalty_tier": "silver", "ltv": 31.5},
    }
    assert attentive_emulator.client.attributes()[phone(4)] == {"loyalty_tier": "gold", "ltv": 42.0}


def test_second_run_sends_nothing_and_changed_rows_are_sent_alone(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 100)
    run_sync(attributes(), warehouse, SQL)
    again = run_sync(attributes(), warehouse, SQL)
    assert again["unchanged"] == 100 and ops(again, "planned") == (0, 0, 0) and again["requests"] == 0
    assert request_count(attentive_emulator, "attributes") == 100

    changed_ids = list(range(0, 100, 10))
    warehouse.executemany(
        "UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id = ?", [(i,) for i in changed_ids]
    )
    warehouse.commit()
    third = run_sync(attributes(), warehouse, SQL)
    assert ops(third, "planned") == (0, 10, 0) and ops(third, "succeeded") == (0, 10, 0)
    assert third["unchanged"] == 90
    latest = bodies(attentive_emulator, "attributes")[100:]
    assert sorted(b["user"]["phone"] for b in latest) == sorted(phone(i) for i in changed_ids)
    assert all(b["properties"]["loyalty_tier"] == "platinum" for b in latest)


def test_nulls_are_omitted_and_types_are_json(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    warehouse.execute("CREATE TABLE t (id TEXT, phone TEXT, tier TEXT, vip INTEGER, joined TEXT, score REAL)")
    warehouse.execute("INSERT INTO t VALUES ('a', ?, NULL, 1, '2024-05-01', 2.5)", (phone(1),))
    warehouse.commit()
    summary = run_sync(attributes(primary_key="id"), warehouse, "SELECT * FROM t")
    assert summary["succeeded"]["added"] == 1
    (body,) = bodies(attentive_emulator, "attributes")
    assert body["properties"] == {"vip": 1, "joined": "2024-05-01", "score": 2.5}
    assert "tier" not in body["properties"]


def test_rejected_row_is_reported_and_not_retried_until_it_changes(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    # Attentive refuses values outside a UI-defined enumerated attribute (documented); the emulator too.
    attentive_emulator.client.set_enumerated_attributes({"loyalty_tier": ["gold", "silver", "platinum"]})
    create_customers(warehouse, 20)
    warehouse.execute("UPDATE customers SET loyalty_tier = 'diamond' WHERE customer_id = 7")
    warehouse.commit()
    first = run_sync(attributes(), warehouse, SQL, max_failed_ratio=0.5)
    assert first["rejected"] == 1 and ops(first, "failed") == (1, 0, 0) and ops(first, "succeeded") == (19, 0, 0)
    assert first["errors"][0]["key"] == "7" and first["errors"][0]["http_status"] == 400
    assert "diamond" in first["errors"][0]["reason"] or "loyalty_tier" in first["errors"][0]["reason"]

    second = run_sync(attributes(), warehouse, SQL, max_failed_ratio=0.5)
    assert second["requests"] == 0 and second["skipped_rejected"] == 1

    warehouse.execute("UPDATE customers SET loyalty_tier = 'gold' WHERE customer_id = 7")
    warehouse.commit()
    third = run_sync(attributes(), warehouse, SQL)
    assert ops(third, "succeeded") == (1, 0, 0) and third["requests"] == 1


def test_transient_failure_is_retried_on_the_next_run(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 10)
    attentive_emulator.client.set_faults(error_rate=1.0, endpoints=["attributes"], seed=3)
    flaky = transport(attentive_emulator.url, max_attempts=2)
    with flaky, pytest.raises(TooManyFailures) as info:
        run_sync(attributes(), warehouse, SQL, sender=flaky)
    assert ops(info.value.summary, "failed") == (10, 0, 0) and info.value.summary["rejected"] == 0
    attentive_emulator.client.clear_faults()
    healed = run_sync(attributes(), warehouse, SQL)
    assert ops(healed, "planned") == (10, 0, 0) and ops(healed, "succeeded") == (10, 0, 0)
    assert len(attentive_emulator.client.attributes()) == 10


def test_national_phones_use_default_region_and_garbage_is_reported(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    warehouse.execute("CREATE TABLE p (id INTEGER, phone TEXT, tier TEXT)")
    warehouse.executemany(
        "INSERT INTO p VALUES (?, ?, 'gold')", [(1, "(415) 555-0123"), (2, "415.555.0124"), (3, "not a phone")]
    )
    warehouse.commit()
    summary = run_sync(
        attributes(primary_key="id", default_region="US"), warehouse, "SELECT * FROM p", max_failed_ratio=0.5
    )
    assert summary["succeeded"]["added"] == 2 and summary["invalid"] == 1
    assert summary["errors"] == [{"key": "3", "reason": "phone could not be parsed (not a number)"}]
    assert sorted(b["user"]["phone"] for b in bodies(attentive_emulator, "attributes")) == [
        "+14155550123",
        "+14155550124",
    ]

    strict = run_sync(
        attributes(primary_key="id"), warehouse, "SELECT * FROM p", sync_id="strict", max_failed_ratio=1.0
    )
    assert strict["invalid"] == 3 and strict["requests"] == 0


def test_invalid_email_without_phone_is_invalid_but_with_phone_is_dropped(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    warehouse.execute("CREATE TABLE e (id INTEGER, phone TEXT, email TEXT, tier TEXT)")
    warehouse.executemany(
        "INSERT INTO e VALUES (?, ?, ?, 'gold')",
        [(1, None, "  ok@example.com  "), (2, None, "nope"), (3, phone(3), "nope")],
    )
    warehouse.commit()
    summary = run_sync(attributes(primary_key="id"), warehouse, "SELECT * FROM e", max_failed_ratio=0.5)
    assert summary["succeeded"]["added"] == 2 and summary["invalid"] == 1
    users = sorted((b["user"] for b in bodies(attentive_emulator, "attributes")), key=str)
    assert {"email": "ok@example.com"} in users and {"phone": phone(3)} in users


def test_duplicate_or_null_keys_fail_before_anything_is_sent(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 30)
    warehouse.execute("INSERT INTO customers VALUES (5, ?, NULL, 'gold', 1)", (phone(99),))
    warehouse.execute("INSERT INTO customers VALUES (NULL, ?, NULL, 'gold', 1)", (phone(98),))
    warehouse.commit()
    with pytest.raises(SourceDataError) as info:
        run_sync(attributes(), warehouse, SQL)
    assert "'5' (2 rows)" in str(info.value) and "NULL" in str(info.value)
    assert request_count(attentive_emulator, "attributes") == 0


def test_configuration_errors_fail_before_sending(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 5)
    with pytest.raises(SyncConfigError, match="'tier_typo'"):
        run_sync(attributes(mapping={"phone": "phone", "tier_typo": "tier"}), warehouse, SQL)
    with pytest.raises(SyncConfigError, match="at most 200"):
        run_sync(attributes(mapping={"phone": "phone", "loyalty_tier": "x" * 201}), warehouse, SQL)
    warehouse.execute("ALTER TABLE customers ADD COLUMN ssn TEXT")
    warehouse.commit()
    with pytest.raises(SyncConfigError, match="sensitive"):
        run_sync(attributes(), warehouse, "SELECT * FROM customers")
    allowed = run_sync(attributes(allow_sensitive=["ssn"]), warehouse, "SELECT * FROM customers")
    assert allowed["succeeded"]["added"] == 5
    assert request_count(attentive_emulator, "attributes") == 5


def test_card_numbers_in_values_fail_before_sending(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 5)
    warehouse.execute("UPDATE customers SET loyalty_tier = '4111 1111 1111 1111' WHERE customer_id = 2")
    warehouse.commit()
    with pytest.raises(SyncConfigError, match="payment card"):
        run_sync(attributes(), warehouse, SQL)
    assert request_count(attentive_emulator, "attributes") == 0


def luhn_complete(prefix: str) -> str:
    """``prefix`` plus the check digit that makes it pass the Luhn test."""
    for d in "0123456789":
        digits = prefix + d
        total = sum(
            (int(c) * 2 - 9 if int(c) * 2 > 9 else int(c) * 2) if i % 2 else int(c)
            for i, c in enumerate(reversed(digits))
        )
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


def test_ids_that_happen_to_pass_as_card_numbers_are_sent(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    """Shopify-style 13-digit order ids: about one in ten passes the Luhn check; the column is not cards."""
    warehouse.execute("CREATE TABLE o (id INTEGER, phone TEXT, last_order_id INTEGER)")
    rows = [(i, phone(i), 5212345678000 + i) for i in range(30)]
    rows[0] = (0, phone(0), int(luhn_complete("521234567890")))  # one of them passes, in the first rows
    warehouse.executemany("INSERT INTO o VALUES (?, ?, ?)", rows)
    warehouse.commit()
    summary = run_sync(attributes(primary_key="id"), warehouse, "SELECT id, phone, last_order_id FROM o")
    assert summary["succeeded"]["added"] == 30 and summary["invalid"] == 0


def test_a_column_of_bare_card_numbers_fails_before_sending(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    warehouse.execute("CREATE TABLE o (id INTEGER, phone TEXT, token TEXT)")
    cards = [luhn_complete(f"411111111111{i:03d}") for i in range(10)]
    warehouse.executemany("INSERT INTO o VALUES (?, ?, ?)", [(i, phone(i), c) for i, c in enumerate(cards)])
    warehouse.commit()
    with pytest.raises(SyncConfigError, match=r"'token' \(10 of 10 values\)"):
        run_sync(attributes(primary_key="id"), warehouse, "SELECT id, phone, token FROM o")
    assert request_count(attentive_emulator, "attributes") == 0
    allowed = run_sync(
        attributes(primary_key="id", allow_sensitive=["token"]), warehouse, "SELECT id, phone, token FROM o"
    )
    assert allowed["succeeded"]["added"] == 10


def test_dry_run_sends_nothing_and_writes_nothing(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 12)
    preview = run_sync(attributes(), warehouse, SQL, dry_run=True)
    assert (
        preview["dry_run"] is True and ops(preview, "planned") == (12, 0, 0) and ops(preview, "succeeded") == (0, 0, 0)
    )
    assert len(preview["samples"]) == 5
    assert preview["samples"][0]["user"]["phone"].startswith("+1") and "*" in preview["samples"][0]["user"]["phone"]
    assert request_count(attentive_emulator, "attributes") == 0
    tables = {r[0] for r in warehouse.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"customers"}

    run_sync(attributes(), warehouse, SQL)
    warehouse.execute("UPDATE customers SET ltv = -1 WHERE customer_id < 3")
    warehouse.commit()
    before = warehouse.execute("SELECT COUNT(*), MAX(updated_at) FROM attentive_sync_state").fetchone()
    preview = run_sync(attributes(), warehouse, SQL, dry_run=True)
    assert ops(preview, "planned") == (0, 3, 0) and preview["unchanged"] == 9
    assert warehouse.execute("SELECT COUNT(*), MAX(updated_at) FROM attentive_sync_state").fetchone() == before
    assert request_count(attentive_emulator, "attributes") == 12


def test_state_can_live_in_another_database(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync, tmp_path: Any
) -> None:
    create_customers(warehouse, 15)
    state = sqlite3.connect(tmp_path / "state.db")
    run_sync(attributes(), warehouse, SQL, state_conn=state)
    again = run_sync(attributes(), warehouse, SQL, state_conn=state)
    assert again["unchanged"] == 15 and again["requests"] == 0
    assert state.execute("SELECT COUNT(*) FROM attentive_sync_state WHERE status = 'ok'").fetchone() == (15,)
    assert warehouse.execute("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'attentive_%'").fetchone() == (0,)


def test_row_log_records_outcomes_without_phones_in_clear(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    warehouse.execute("CREATE TABLE s (phone TEXT, tier TEXT)")
    warehouse.executemany("INSERT INTO s VALUES (?, 'gold')", [(phone(i),) for i in range(3)] + [("bad",)])
    warehouse.commit()
    run_sync(attributes(primary_key="phone"), warehouse, "SELECT * FROM s", max_failed_ratio=0.5)
    log = warehouse.execute("SELECT pk, operation, status, http_status, message FROM attentive_sync_log").fetchall()
    assert len(log) == 4
    assert sorted(r[2] for r in log) == ["invalid", "ok", "ok", "ok"]
    dumped = repr(log) + repr(warehouse.execute("SELECT * FROM attentive_sync_log").fetchall())
    assert all(phone(i) not in dumped for i in range(3))
    assert any(r[0] == "+1******0000" for r in log)


def test_failure_ratio_fails_after_recording_everything(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 10)
    warehouse.execute("UPDATE customers SET phone = 'x' WHERE customer_id < 3")
    warehouse.commit()
    with pytest.raises(TooManyFailures, match="3 of 10 rows invalid"):
        run_sync(attributes(), warehouse, SQL, max_failed_ratio=0.2)
    assert request_count(attentive_emulator, "attributes") == 7
    ok = warehouse.execute("SELECT COUNT(*) FROM attentive_sync_state WHERE status = 'ok'").fetchone()[0]
    assert ok == 7


class _SpyCursor:
    """A real sqlite3 cursor that records how rows are fetched."""

    def __init__(self, cur: sqlite3.Cursor, calls: list[tuple[str, int]]) -> None:
        self._cur, self._calls = cur, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    def fetchmany(self, size: int) -> list[Any]:
        rows = self._cur.fetchmany(size)
        self._calls.append(("fetchmany", len(rows)))
        return rows

    def fetchall(self) -> list[Any]:
        rows = self._cur.fetchall()
        self._calls.append(("fetchall", len(rows)))
        return rows


class _SpyConnection:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn, self.calls = conn, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def cursor(self) -> _SpyCursor:
        return _SpyCursor(self._conn.cursor(), self.calls)


def test_rows_are_streamed_in_chunks_never_fetched_whole(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 600)
    spy = _SpyConnection(warehouse)
    summary = run_sync(attributes(), spy, SQL, state_conn=warehouse, chunk=100, batch_size=50)
    assert summary["succeeded"]["added"] == 600
    fetched = [n for kind, n in spy.calls if kind == "fetchmany"]
    assert max(fetched) == 100 and sum(fetched) >= 600
    assert all(n < 100 for kind, n in spy.calls if kind == "fetchall"), "the model must never be fetched whole"
    assert warehouse.execute("SELECT COUNT(*) FROM attentive_sync_state WHERE status='ok'").fetchone() == (600,)


def test_a_row_sent_without_its_invalid_email_is_counted_and_named(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 3)
    warehouse.execute("UPDATE customers SET email = 'not-an-email' WHERE customer_id = 1")
    warehouse.commit()
    summary = run_sync(attributes(), warehouse, SQL)
    assert summary["succeeded"]["added"] == 3 and summary["invalid"] == 0
    assert summary["warnings"] == 1
    assert summary["warning_samples"] == [{"key": "1", "note": summary["warning_samples"][0]["note"]}]
    assert "sent without it" in summary["warning_samples"][0]["note"]
    assert "not-an-email" not in str(summary)


def test_rows_with_every_attribute_null_are_not_errors(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 10)
    warehouse.execute("UPDATE customers SET loyalty_tier = NULL, ltv = NULL WHERE customer_id < 5")
    warehouse.commit()
    summary = run_sync(attributes(mapping={"phone": "phone", "loyalty_tier": "tier", "ltv": "ltv"}), warehouse, SQL)
    assert summary["succeeded"]["added"] == 5 and summary["invalid"] == 0 and summary["nothing_to_send"] == 5


def test_the_same_mapping_written_in_another_order_sends_nothing(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 10)
    run_sync(attributes(mapping={"phone": "phone", "loyalty_tier": "tier", "ltv": "ltv"}), warehouse, SQL)
    again = run_sync(attributes(mapping={"ltv": "ltv", "loyalty_tier": "tier", "phone": "phone"}), warehouse, SQL)
    assert again["unchanged"] == 10 and again["requests"] == 0
