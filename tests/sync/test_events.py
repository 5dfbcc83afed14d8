"""The events sync (Insert): sent once per key, stale events counted, invalid rows reported."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from typing import Any

import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.errors import SyncConfigError
from airflow_provider_attentive.sync.objects import EventsType
from tests.helpers import objects
from tests.helpers.engine import RunSync
from tests.helpers.phones import phone
from tests.helpers.records import bodies, request_count

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
MAPPING = {
    "phone": "phone",
    "email": "email",
    "shipped_at": "timestamp",
    "carrier": "properties.carrier",
    "tracking_url": "properties.trackingUrl",
}
SQL = (
    "SELECT order_id, phone, email, shipped_at, carrier, tracking_url FROM shipments "
    "WHERE shipped_at >= '{start}' AND shipped_at < '{end}'"
)


def events(**kwargs: Any) -> EventsType:
    """The shipments model's events: keyed by ``order_id``, columns mapped by ``MAPPING``."""
    return objects.events(**{"primary_key": "order_id", "mapping": MAPPING, **kwargs})


def create_shipments(conn: sqlite3.Connection, n: int, *, start: dt.datetime = NOW - dt.timedelta(hours=2)) -> None:
    conn.execute(
        "CREATE TABLE shipments (order_id TEXT, phone TEXT, email TEXT, shipped_at TEXT, carrier TEXT, tracking_url TEXT)"
    )
    conn.executemany(
        "INSERT INTO shipments VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                f"o-{i}",
                phone(i),
                None,
                (start + dt.timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S"),
                "fedex",
                f"https://t.example.com/{i}",
            )
            for i in range(n)
        ],
    )
    conn.commit()


def window(start: dt.datetime, end: dt.datetime) -> str:
    return SQL.format(start=start.strftime("%Y-%m-%d %H:%M:%S"), end=end.strftime("%Y-%m-%d %H:%M:%S"))


ALL = window(NOW - dt.timedelta(days=30), NOW + dt.timedelta(days=1))


def test_exact_payload_and_a_rerun_sends_nothing(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_shipments(warehouse, 5)
    first = run_sync(events(), warehouse, ALL)
    assert first["succeeded"]["added"] == 5 and first["stale"] == 0
    sent = {b["properties"]["trackingUrl"]: b for b in bodies(attentive_emulator, "events")}
    body = sent["https://t.example.com/2"]
    occurred = (NOW - dt.timedelta(hours=2) + dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert body == {
        "type": "Order Shipped",
        "user": {"phone": phone(2)},
        "externalEventId": str(uuid.UUID(body["externalEventId"])),
        "occurredAt": occurred,
        "properties": {"carrier": "fedex", "trackingUrl": "https://t.example.com/2"},
    }
    again = run_sync(events(), warehouse, ALL)
    assert again["requests"] == 0 and again["unchanged"] == 5
    assert (
        request_count(attentive_emulator, "events") == 5 and attentive_emulator.client.stats()["duplicate_events"] == 0
    )


def test_overlapping_intervals_send_only_new_events(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    start = NOW - dt.timedelta(hours=3)
    create_shipments(warehouse, 60, start=start)  # one event a minute
    first = run_sync(events(), warehouse, window(start, start + dt.timedelta(minutes=40)))
    assert first["succeeded"]["added"] == 40
    overlap = run_sync(events(), warehouse, window(start + dt.timedelta(minutes=20), start + dt.timedelta(minutes=60)))
    assert overlap["rows_read"] == 40 and overlap["unchanged"] == 20 and overlap["succeeded"]["added"] == 20
    ids = [b["externalEventId"] for b in bodies(attentive_emulator, "events")]
    assert len(ids) == 60 == len(set(ids))


def test_changed_event_is_not_resent_but_counted(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_shipments(warehouse, 3)
    run_sync(events(), warehouse, ALL)
    warehouse.execute("UPDATE shipments SET carrier = 'ups' WHERE order_id = 'o-1'")
    warehouse.commit()
    again = run_sync(events(), warehouse, ALL)
    assert again["requests"] == 0 and again["ignored_changes"] == 1 and again["unchanged"] == 3


def test_external_event_id_is_stable_and_per_sync(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    assert events().external_event_id("o-1") == events().external_event_id("o-1")
    assert events().external_event_id("o-1") != events(sync_id="other").external_event_id("o-1")
    create_shipments(warehouse, 2)
    run_sync(events(), warehouse, ALL)
    sent = {b["user"]["phone"]: b["externalEventId"] for b in bodies(attentive_emulator, "events")}
    assert sent[phone(1)] == events().external_event_id("o-1")


def test_stale_events_are_counted_and_can_be_skipped(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_shipments(warehouse, 4, start=NOW - dt.timedelta(hours=13))  # 13h..12h57m old: all stale
    skipped = run_sync(events(skip_stale=True), warehouse, ALL, sync_id="skip")
    assert skipped["stale"] == 4 and skipped["requests"] == 0
    sent = run_sync(events(), warehouse, ALL)
    assert sent["stale"] == 4 and sent["succeeded"]["added"] == 4


def test_invalid_rows_are_reported_and_valid_rows_go_through(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    warehouse.execute("CREATE TABLE ev (id INTEGER, phone TEXT, email TEXT, type TEXT, ts TEXT, properties TEXT)")
    rows = [
        (1, phone(1), None, "Order Shipped", "2026-01-01T10:00:00+02:00", '{"order": {"items": [1, 2]}}'),
        (2, phone(2), None, "Bad, Type", None, None),
        (3, None, None, "Order Shipped", None, None),
        (4, phone(4), None, "Order Shipped", "yesterday-ish", None),
        (5, phone(5), None, "Order Shipped", None, '{"bad|key": 1}'),
        (6, phone(6), None, None, None, None),
        (7, phone(7), None, "Order Shipped", None, "not json"),
    ]
    warehouse.executemany("INSERT INTO ev VALUES (?, ?, ?, ?, ?, ?)", rows)
    warehouse.commit()
    mapping = {"phone": "phone", "email": "email", "type": "type", "ts": "timestamp", "properties": "properties"}
    summary = run_sync(
        events(primary_key="id", mapping=mapping, event_type=None), warehouse, "SELECT * FROM ev", max_failed_ratio=1
    )
    assert summary["succeeded"]["added"] == 1 and summary["invalid"] == 6
    reasons = {e["key"]: e["reason"] for e in summary["errors"]}
    assert "forbids" in reasons["2"] and "no identifier" in reasons["3"] and "ISO 8601" in reasons["4"]
    assert "forbids" in reasons["5"] and "missing" in reasons["6"] and "JSON" in reasons["7"]
    (body,) = bodies(attentive_emulator, "events")
    assert body["occurredAt"] == "2026-01-01T08:00:00.000Z"
    assert body["properties"] == {"order": {"items": [1, 2]}}


def test_default_mapping_makes_other_columns_properties(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    warehouse.execute("CREATE TABLE ev (event_id TEXT, email TEXT, type TEXT, timestamp TEXT, sku TEXT, qty INTEGER)")
    warehouse.execute("INSERT INTO ev VALUES ('e1', 'a@example.com', 'Viewed', '2026-11-26 10:00:00', 'SKU-1', 2)")
    warehouse.commit()
    run_sync(events(primary_key="event_id", mapping=None, event_type=None), warehouse, "SELECT * FROM ev")
    (body,) = bodies(attentive_emulator, "events")
    assert body["type"] == "Viewed" and body["user"] == {"email": "a@example.com"}
    assert body["properties"] == {"sku": "SKU-1", "qty": 2} and body["occurredAt"] == "2026-11-26T10:00:00.000Z"


def test_event_configuration_errors(warehouse: sqlite3.Connection, run_sync: RunSync) -> None:
    create_shipments(warehouse, 1)
    with pytest.raises(SyncConfigError, match="forbids"):
        events(event_type="Order (Shipped)")
    with pytest.raises(SyncConfigError, match="need a type"):
        run_sync(events(event_type=None), warehouse, ALL)
    with pytest.raises(SyncConfigError, match="not an event field"):
        run_sync(events(mapping={"phone": "phone", "carrier": "carrier"}), warehouse, ALL)


def test_epoch_timestamps_stored_as_digits_or_numbers(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    # No declared type: SQLite keeps each value's own type, text digits as text and numbers as numbers.
    warehouse.execute("CREATE TABLE ev (id INTEGER, phone TEXT, ts)")
    rows: list[tuple[int, str, Any]] = [
        (1, phone(1), "1795735919"),  # seconds as text, as SQLite stores them from a TEXT source
        (2, phone(2), " 1795735919123 "),  # milliseconds as text
        (3, phone(3), 1795735919),  # seconds as an integer
        (4, phone(4), 1795735919123),  # milliseconds as an integer
        (5, phone(5), 1795735919.5),  # fractional seconds
        (6, phone(6), "123456789"),  # 9 digits: seconds (1973)
        (7, phone(7), "20261126"),  # 8 digits of text: an ISO 8601 basic date, not an epoch
        (8, phone(8), "17957359191"),  # 11 digits: seconds or milliseconds? refused, not guessed
        (9, phone(9), 20261126),  # 8 digits as a number: a date written as a number, refused
        (10, phone(10), "12345"),
        (11, phone(11), -1795735919),
    ]
    warehouse.executemany("INSERT INTO ev VALUES (?, ?, ?)", rows)
    warehouse.commit()
    summary = run_sync(
        events(primary_key="id", mapping={"phone": "phone", "ts": "timestamp"}),
        warehouse,
        "SELECT * FROM ev",
        max_failed_ratio=1,
    )
    assert summary["succeeded"]["added"] == 7 and summary["invalid"] == 4
    sent = {body["user"]["phone"]: body["occurredAt"] for body in bodies(attentive_emulator, "events")}
    assert sent == {
        phone(1): "2026-11-26T23:31:59.000Z",
        phone(2): "2026-11-26T23:31:59.123Z",
        phone(3): "2026-11-26T23:31:59.000Z",
        phone(4): "2026-11-26T23:31:59.123Z",
        phone(5): "2026-11-26T23:31:59.500Z",
        phone(6): "1973-11-29T21:33:09.000Z",
        phone(7): "2026-11-26T00:00:00.000Z",
    }
    reasons = {e["key"]: e["reason"] for e in summary["errors"]}
    assert set(reasons) == {"8", "9", "10", "11"}
    assert reasons["8"] == (
        "timestamp '17957359191' is a number but not a Unix epoch time: it is 11 digits long, while epoch "
        "seconds have 9 or 10 digits and epoch milliseconds 12 or 13; send other dates as ISO 8601 text or a "
        "date/time column"
    )
    assert "'20261126'" in reasons["9"] and "8 digits long" in reasons["9"]
    assert "5 digits long" in reasons["10"] and "it is negative" in reasons["11"]


def test_an_out_of_range_timestamp_is_an_invalid_row_not_a_crash(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    warehouse.execute("CREATE TABLE e (id INTEGER, phone TEXT, ts TEXT)")
    rows = [(1, phone(1), "0001-01-01T00:00:00+01:00"), (2, phone(2), "2026-11-26T10:00:00Z"), (3, phone(3), None)]
    warehouse.executemany("INSERT INTO e VALUES (?, ?, ?)", rows)
    warehouse.commit()
    obj = events(primary_key="id", mapping={"phone": "phone", "ts": "timestamp"})
    summary = run_sync(obj, warehouse, "SELECT id, phone, ts FROM e", max_failed_ratio=1.0)
    assert summary["succeeded"]["added"] == 2 and summary["invalid"] == 1
    assert summary["errors"] == [{"key": "1", "reason": "timestamp '0001-01-01T00:00:00+01:00' is out of range"}]


def test_sensitive_values_and_names_inside_a_properties_json_column_stop_the_run(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    warehouse.execute("CREATE TABLE e (id INTEGER, phone TEXT, props TEXT)")
    sql = "SELECT id, phone, props FROM e"
    obj = events(primary_key="id", mapping={"phone": "phone", "props": "properties"})
    for props, found in (
        ('{"order": {"card": "4111 1111 1111 1111"}}', "payment card"),
        ('{"items": [{"ssn": "x"}]}', "items.ssn"),
        ('{"note": "123-45-6789"}', "SSN"),
    ):
        warehouse.execute("DELETE FROM e")
        warehouse.executemany("INSERT INTO e VALUES (?, ?, ?)", [(1, phone(1), '{"ok": 1}'), (2, phone(2), props)])
        warehouse.commit()
        with pytest.raises(SyncConfigError, match=found):
            run_sync(obj, warehouse, sql)
        assert request_count(attentive_emulator, "events") == 0
    allowed = run_sync(
        events(primary_key="id", mapping={"phone": "phone", "props": "properties"}, allow_sensitive=["props"]),
        warehouse,
        sql,
    )
    assert allowed["succeeded"]["added"] == 2


def test_an_event_whose_answer_was_lost_is_in_doubt_not_sent_again(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    create_shipments(warehouse, 5)
    window = SQL.format(start=NOW - dt.timedelta(days=1), end=NOW + dt.timedelta(days=1))
    attentive_emulator.client.set_faults(drop_after_apply_rate=1.0, endpoints=["events"], seed=1)
    first = run_sync(events(), warehouse, window, max_failed_ratio=1.0)
    assert first["in_doubt"] == 5 and first["failed"]["added"] == 0 and request_count(attentive_emulator, "events") == 5
    attentive_emulator.client.clear_faults()
    again = run_sync(events(), warehouse, window, max_failed_ratio=1.0)
    assert again["requests"] == 0 and again["in_doubt"] == 5, "reported, not resent"
    resent = run_sync(events(), warehouse, window, resend_in_doubt=True)
    assert resent["succeeded"]["added"] == 5
    assert attentive_emulator.client.stats()["events_stored"] == 5
