"""Runs that cannot succeed stop early, record what they did, and leave every row for the next run."""

from __future__ import annotations

import socket
import sqlite3
from collections import Counter

import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.errors import AttentiveAuthError, AttentiveUnavailable
from tests.helpers.engine import RunSync, transport
from tests.helpers.objects import attributes, events, subs
from tests.helpers.records import request_count
from tests.helpers.warehouse import create_customers, create_orders, set_members

SQL = "SELECT customer_id, phone, loyalty_tier FROM customers"


def statuses(conn: sqlite3.Connection) -> Counter[str]:
    return Counter(r[0] for r in conn.execute("SELECT status FROM attentive_sync_state WHERE sync_id = 'test.sync'"))


def test_a_revoked_key_stops_the_run_and_the_fixed_key_sends_every_row(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 300)
    with transport(attentive_emulator.url, api_key="revoked-key") as bad, pytest.raises(AttentiveAuthError) as info:
        run_sync(attributes(), warehouse, SQL, sender=bad, batch_size=20)
    message = str(info.value)
    assert "HTTP 401" in message and "revoked-key" not in message
    summary = info.value.summary
    refused = summary["failed"]["added"]
    # The run stopped after the batches already handed over; the rest was never attempted.
    assert 0 < refused < 300 and summary["remaining"] == 300 - refused and summary["rejected"] == 0
    assert statuses(warehouse) == Counter(failed=refused), "refused rows are failed (retried), never rejected"

    healed = run_sync(attributes(), warehouse, SQL)
    assert healed["succeeded"]["added"] == 300 and healed["unchanged"] == 0
    assert len(attentive_emulator.client.attributes()) == 300
    assert statuses(warehouse) == Counter(ok=300)


def test_a_key_without_the_scope_stops_an_events_run_with_the_reason(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_orders(warehouse, 30)
    attentive_emulator.client.add_key("attributes-only", scopes=["attributes:write"])
    with (
        transport(attentive_emulator.url, api_key="attributes-only") as limited,
        pytest.raises(AttentiveAuthError) as info,
    ):
        run_sync(events(), warehouse, "SELECT id, phone FROM orders", sender=limited)
    assert "HTTP 403" in str(info.value) and "permission" in str(info.value)
    assert attentive_emulator.client.stats()["events_stored"] == 0

    attentive_emulator.client.add_key("attributes-only", scopes=["attributes:write", "events:write"])
    with transport(attentive_emulator.url, api_key="attributes-only") as fixed:
        again = run_sync(events(), warehouse, "SELECT id, phone FROM orders", sender=fixed)
    assert again["succeeded"]["added"] == 30 and attentive_emulator.client.stats()["events_stored"] == 30


def test_an_unreachable_attentive_trips_the_breaker_instead_of_trying_every_row(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_customers(warehouse, 500)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes
    with transport(closed, max_attempts=2) as down, pytest.raises(AttentiveUnavailable) as info:
        run_sync(attributes(), warehouse, SQL, sender=down, batch_size=10, max_consecutive_failures=20)
    summary = info.value.summary
    tried = summary["failed"]["added"]
    # 20 failures in a row, plus what was already handed to the transport: its look-ahead (about a second of
    # the endpoint's rate, 128 here) and the batch being pulled. Without the breaker all 500 would be tried.
    assert 20 <= tried <= 20 + 128 + 10, "the run kept going long after Attentive stopped answering"
    assert summary["remaining"] == 500 - tried
    assert "unavailable" in str(info.value) and "next run" in str(info.value)
    assert statuses(warehouse) == Counter(failed=tried)

    healed = run_sync(attributes(), warehouse, SQL)
    assert healed["succeeded"]["added"] == 500
    assert request_count(attentive_emulator, "attributes") == 500


def test_a_dry_run_lists_who_a_blocked_mirror_would_remove(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    set_members(warehouse, list(range(10)))
    run_sync(subs(), warehouse, "SELECT phone, email FROM members", mode="mirror")
    set_members(warehouse, list(range(5)))  # half the audience leaves: above max_removals=0.2
    dry = run_sync(subs(), warehouse, "SELECT phone, email FROM members", mode="mirror", dry_run=True)
    assert dry["blocked_removals"] == 5
    assert dry["planned"]["removed"] == 5 and len(dry["would_send"]["removed"]) == 5
    assert all("*" in key for key in dry["would_send"]["removed"]), "phones are masked"
    assert request_count(attentive_emulator, "unsubscribe") == 0
