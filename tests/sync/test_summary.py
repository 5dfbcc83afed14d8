"""The run summary a newcomer reads: every invalid row counted by reason, and the counters explained in the log."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.objects import AttributesType
from airflow_provider_attentive.sync.state import RowOutcome, StateStore
from airflow_provider_attentive.sync.summary import MAX_REASONS, REASON_EXAMPLES, Summary, render_table
from tests.helpers.engine import RunSync
from tests.helpers.objects import attributes, subs
from tests.helpers.phones import phone

NOT_VALID = "phone is not a valid number for its country"
NOT_A_NUMBER = "phone could not be parsed (not a number)"
NO_IDENTIFIER = "no identifier: phone, email and client_user_id are all empty"


def customers_with_bad_rows(conn: sqlite3.Connection) -> None:
    """300 customers: 52 phones no country has, 20 that are not numbers, 8 with no identifier at all."""
    conn.execute("CREATE TABLE customers (customer_id INTEGER, phone TEXT, email TEXT, loyalty_tier TEXT)")
    rows = []
    for i in range(300):
        number: str | None = phone(i)
        if i < 52:
            number = f"+1200{i:07d}"  # area code 200 is no one's
        elif i < 72:
            number = "call me"
        elif i < 80:
            number = None
        rows.append((i, number, None, "gold"))
    conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", rows)
    conn.commit()


def us_customers() -> AttributesType:
    return attributes(default_region="US")


def test_every_invalid_row_is_counted_under_its_reason_in_the_summary_and_the_log(
    attentive_emulator: Emulator,
    warehouse: sqlite3.Connection,
    run_sync: RunSync,
    caplog: pytest.LogCaptureFixture,
) -> None:
    customers_with_bad_rows(warehouse)
    with caplog.at_level(logging.INFO, logger="airflow_provider_attentive.sync"):
        summary = run_sync(us_customers(), warehouse, "SELECT * FROM customers", max_failed_ratio=0.5)
    assert summary["invalid"] == 80 and summary["succeeded"]["added"] == 220
    assert len(summary["errors"]) == 20, "the error samples stay bounded"
    assert summary["invalid_reasons"] == [
        {"reason": NOT_VALID, "count": 52, "examples": ["0", "1", "2", "3", "4"]},
        {"reason": NOT_A_NUMBER, "count": 20, "examples": ["52", "53", "54", "55", "56"]},
        {"reason": NO_IDENTIFIER, "count": 8, "examples": ["72", "73", "74", "75", "76"]},
    ]
    log = caplog.text
    assert "invalid rows by reason" in log
    assert f"52 rows: {NOT_VALID} (e.g. 0, 1, 2, 3, 4, ...)" in log
    assert f"20 rows: {NOT_A_NUMBER} (e.g. 52, 53, 54, 55, 56, ...)" in log
    assert f" 8 rows: {NO_IDENTIFIER} (e.g. 72, 73, 74, 75, 76, ...)" in log
    assert log.index("| invalid ") < log.index("invalid rows by reason"), "the reasons follow the table"


def test_a_phone_key_is_shown_masked_under_its_reason(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    warehouse.execute("CREATE TABLE vip (phone TEXT)")
    warehouse.executemany("INSERT INTO vip VALUES (?)", [(phone(1),), ("+12000000017",), ("415 200 00",)])
    warehouse.commit()
    summary = run_sync(subs(), warehouse, "SELECT phone FROM vip", mode="add", max_failed_ratio=1.0)
    shown = {r["reason"]: r["examples"] for r in summary["invalid_reasons"]}
    assert sum(r["count"] for r in summary["invalid_reasons"]) == summary["invalid"] == 2
    assert "+12000000017" not in str(shown) and "415 200 00" not in str(shown)
    assert all("*" in key for keys in shown.values() for key in keys)


def test_a_dry_run_counts_the_reasons_too(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    customers_with_bad_rows(warehouse)
    preview = run_sync(us_customers(), warehouse, "SELECT * FROM customers", dry_run=True)
    assert [(r["reason"], r["count"]) for r in preview["invalid_reasons"]] == [
        (NOT_VALID, 52),
        (NOT_A_NUMBER, 20),
        (NO_IDENTIFIER, 8),
    ]


def summary() -> Summary:
    return Summary(sync_id="s", object_type="attributes", mode="upsert", dry_run=False, run_id="r")


def test_distinct_reasons_are_bounded_and_the_rest_counted_as_other() -> None:
    s = summary()
    for i in range(MAX_REASONS + 10):
        for j in range(3):
            s.invalid_row(f"{i}-{j}", f"timestamp '{i}' is out of range")
    reasons = s.as_dict()["invalid_reasons"]
    assert len(reasons) == MAX_REASONS + 1 and s.invalid == 3 * (MAX_REASONS + 10)
    assert reasons[-1]["reason"] == "other" and reasons[-1]["count"] == 30
    assert sum(r["count"] for r in reasons) == s.invalid, "every invalid row is counted once"
    assert all(len(r["examples"]) <= REASON_EXAMPLES for r in reasons)


def test_no_invalid_rows_adds_no_lines_under_the_table() -> None:
    table = render_table(summary().as_dict())
    assert table.splitlines()[-1].startswith("+-") and "invalid rows by reason" not in table
    assert summary().as_dict()["invalid_reasons"] == []


def test_stale_events_are_explained_under_the_table() -> None:
    s = summary()
    s.extra["stale"] = 30
    table = render_table(s.as_dict())
    assert "| stale " in table
    note = table.splitlines()[-1]
    assert note.startswith("stale: 30 event(s) older than 12 hours") and "skip_stale=True" in note
    s.extra["stale"] = 0
    assert "older than 12 hours" not in render_table(s.as_dict())


def test_rows_of_earlier_jobs_and_an_extra_operation_show_in_the_table() -> None:
    s = summary()
    assert "earlier jobs' rows" not in render_table(s.as_dict())
    s.reconciled.update(ok=7, failed=2)
    s.count_ops(("retired",))
    s.planned["retired"] = 3
    table = render_table(s.as_dict())
    assert "| earlier jobs' rows          | 7 ok / 0 rejected / 2 failed" in table
    assert "| retired " in table and "0 ok / 0 failed / 3 planned" in table
    assert s.as_dict()["succeeded"] == {"added": 0, "changed": 0, "removed": 0, "retired": 0}


def test_phones_and_emails_quoted_in_a_refusal_are_masked_in_the_summary_and_the_log_table() -> None:
    quoted = "member {'phone': '+14155550123', 'email': 'ann.lee@example.com'} was refused"
    s = summary()
    s.error("17", quoted, 400)
    assert s.as_dict()["errors"] == [
        {"key": "17", "reason": "member {'phone': '+1******0123', 'email': 'a***@example.com'} was refused",
         "http_status": 400}
    ]  # fmt: skip
    conn = sqlite3.connect(":memory:")
    store = StateStore(conn)
    store.ensure_tables()
    store.write_outcomes(
        "s", "r", [RowOutcome(pk="17", op="added", status="rejected", message=quoted, write_state=False)]
    )
    (message,) = conn.execute("SELECT message FROM attentive_sync_log").fetchone()
    assert "+14155550123" not in message and "ann.lee@" not in message and "+1******0123" in message
