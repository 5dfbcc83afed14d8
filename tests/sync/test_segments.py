"""Segment members through v2 bulk member jobs, against the emulator: the segment holds exactly the model.

Each test drives the engine with :class:`SegmentsType` and :class:`SegmentMembersDelivery` over a real socket,
and checks what Attentive (the emulator) ends up holding and which requests it received. No test may see a
subscription request or a message: segment membership texts nobody.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from airflow_provider_attentive.client import AttentiveTransport
from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator
from airflow_provider_attentive.sync.engine import SyncEngine, SyncOptions
from airflow_provider_attentive.sync.errors import AttentiveAuthError, SyncAborted, SyncConfigError
from airflow_provider_attentive.sync.object_type import Invalid, Prepared
from airflow_provider_attentive.sync.objects.segments import SegmentMembersDelivery, SegmentsType
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.state import StateStore
from tests.helpers.emulator import v2_client
from tests.helpers.engine import transport as make_transport
from tests.helpers.objects import segments
from tests.helpers.phones import phone
from tests.helpers.postgres import pg_connect
from tests.helpers.warehouse import create_customers

SQL = "SELECT customer_id, phone, email FROM customers"
SEGMENT = "vip_gold"
SYNC_ID = "seg.sync"
ADD, REMOVE = "segment_members_add", "segment_members_remove"
MEMBER_ENDPOINTS = (ADD, REMOVE)


@pytest.fixture(autouse=True)
def quick_jobs(attentive_emulator: Emulator) -> Iterator[None]:
    """Jobs finish in 50 ms; and after every test, Attentive was asked for no subscription and sent no message."""
    attentive_emulator.client.set_job_settings(delay_s=0.05, pending_s=0.01)
    yield
    client = attentive_emulator.client
    for endpoint in ("subscribe", "unsubscribe", "subscriptions_read", "bulk"):
        assert client.requests(endpoint=endpoint) == [], f"a segments sync called {endpoint}"
    assert client.messages() == [], "a segments sync texted someone"


def engine(
    conn: Any,
    sender: Any,
    *,
    mode: str = "mirror",
    obj: SegmentsType | None = None,
    sql: str = SQL,
    wait_s: float = 10.0,
    member_batch_size: int = 10_000,
    placeholder: str = "?",
    **options: Any,
) -> SyncEngine:
    """One segments run of ``SYNC_ID`` (its state beside the model), waiting up to ``wait_s`` for its jobs."""
    obj = obj or segments()
    delivery = SegmentMembersDelivery(
        sender,
        external_id=obj.segment.external_id,
        batch_size=member_batch_size,
        wait_s=wait_s,
        poll_interval_s=0.05,
    )
    options.setdefault("sync_id", SYNC_ID)
    options.setdefault("max_failed_ratio", 1.0)
    options.setdefault("progress_interval_s", 0.5)
    return SyncEngine(
        obj,
        SyncOptions(mode=mode, **options),
        source=SqlSource(conn, sql, chunk_size=500),
        state=StateStore(conn, placeholder=placeholder),
        sender=sender,
        delivery=delivery,
    )


def run(conn: Any, sender: Any, **kwargs: Any) -> dict[str, Any]:
    return engine(conn, sender, **kwargs).run()


def members(emu: Emulator, external_id: str = SEGMENT) -> set[str]:
    """The keys the segment holds its members by (phone, else email)."""
    return set(emu.client.segments()[external_id]["members"])


def phones(ids: Sequence[int] | range) -> set[str]:
    return {phone(i) for i in ids}


def member_requests(emu: Emulator, endpoint: str, since: int = 0) -> list[list[dict[str, str]]]:
    """The members each request on ``endpoint`` carried, in order of arrival, from the ``since``-th on."""
    return [r["body"]["members"] for r in emu.client.requests(endpoint=endpoint)[since:]]


def log_size(emu: Emulator) -> int:
    return len(emu.client.requests())


def endpoints_since(emu: Emulator, since: int) -> list[str]:
    return [r["endpoint"] for r in emu.client.requests()[since:]]


def statuses(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, COUNT(*) FROM attentive_sync_state GROUP BY status").fetchall())


def memberships(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT member, COUNT(*) FROM attentive_sync_state GROUP BY member").fetchall())


def state_row(conn: sqlite3.Connection, pk: str) -> dict[str, Any]:
    cols = ("status", "op", "member", "identity", "message")
    row = conn.execute(f"SELECT {', '.join(cols)} FROM attentive_sync_state WHERE pk = ?", (pk,)).fetchone()
    return dict(zip(cols, row, strict=True))


def wait_for_jobs(emu: Emulator, timeout: float = 10.0) -> None:
    """Until Attentive has finished every job (released or not held)."""
    deadline = time.monotonic() + timeout
    while any(job["status"] not in ("COMPLETED", "FAILED") for job in emu.client.jobs()):
        assert time.monotonic() < deadline, "jobs did not finish"
        time.sleep(0.02)


def add_customers(conn: sqlite3.Connection, ids: Sequence[int] | range) -> None:
    conn.executemany(
        "INSERT INTO customers VALUES (?, ?, ?, 'gold', 0)", [(i, phone(i), f"user{i}@example.com") for i in ids]
    )
    conn.commit()


def update_customer(conn: sqlite3.Connection, pk: int, **values: str) -> None:
    """Give customer ``pk`` new ``phone`` / ``email`` values."""
    columns = ", ".join(f"{name} = ?" for name in values)  # names from the tests only
    conn.execute(f"UPDATE customers SET {columns} WHERE customer_id = ?", (*values.values(), pk))
    conn.commit()


def delete_customers(conn: sqlite3.Connection, where: str, params: Sequence[Any] = ()) -> None:
    conn.execute(f"DELETE FROM customers WHERE {where}", params)
    conn.commit()


# ------------------------------------------------------------------------------------------- mirror ----


def test_a_mirror_of_2000_fills_the_segment_in_one_request_and_a_rerun_only_reads_the_segment(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 2000)
    summary = run(warehouse, transport)

    assert summary["segment"] == "created" and summary["segment_external_id"] == SEGMENT
    created = attentive_emulator.client.requests(endpoint="segment_create")
    assert [r["body"] for r in created] == [{"externalId": SEGMENT, "name": "VIP Gold"}]
    assert attentive_emulator.client.segments()[SEGMENT]["name"] == "VIP Gold"
    sent = member_requests(attentive_emulator, ADD)
    assert len(sent) == 1 and len(sent[0]) == 2000
    assert sent[0][7] == {"phone": phone(7), "email": "user7@example.com"}
    assert members(attentive_emulator) == phones(range(2000))
    assert summary["added"] == 2000 and summary["succeeded"]["added"] == 2000
    assert summary["bulk_jobs_submitted"] == 1 and summary["bulk_jobs_completed"] == 1
    assert summary["awaiting_results"] == 0 and summary["bulk_jobs_pending"] == 0
    assert statuses(warehouse) == {"ok": 2000}
    assert member_requests(attentive_emulator, REMOVE) == []

    before = log_size(attentive_emulator)
    again = run(warehouse, transport)
    assert endpoints_since(attentive_emulator, before) == ["segment_read"]
    assert again["segment"] == "unchanged" and again["unchanged"] == 2000 and again["added"] == 0
    assert members(attentive_emulator) == phones(range(2000))


@pytest.mark.postgres
def test_a_mirror_of_2000_with_the_model_and_state_in_postgresql(
    pg_database: dict[str, Any], transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    conn = pg_connect(pg_database)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE customers (customer_id INTEGER, phone TEXT, email TEXT)")
            cur.executemany(
                "INSERT INTO customers VALUES (%s, %s, %s)",
                [(i, phone(i), f"user{i}@example.com") for i in range(2000)],
            )
        conn.commit()
        summary = run(conn, transport, placeholder="%s")
        assert summary["segment"] == "created" and summary["added"] == 2000
        assert [len(m) for m in member_requests(attentive_emulator, ADD)] == [2000]
        assert members(attentive_emulator) == phones(range(2000))
        with conn.cursor() as cur:
            cur.execute("SELECT status, member, COUNT(*) FROM attentive_sync_state GROUP BY status, member")
            assert cur.fetchall() == [("ok", "in_segment", 2000)]
            cur.execute("SELECT external_id, origin FROM attentive_sync_segments")
            assert cur.fetchall() == [(SEGMENT, "created")]
        conn.commit()

        before = log_size(attentive_emulator)
        again = run(conn, transport, placeholder="%s")
        assert endpoints_since(attentive_emulator, before) == ["segment_read"] and again["unchanged"] == 2000
    finally:
        conn.close()


def test_300_in_and_200_out_change_the_segment_by_exactly_that(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 2000)
    run(warehouse, transport)
    delete_customers(warehouse, "customer_id < 200")
    add_customers(warehouse, range(2000, 2300))

    summary = run(warehouse, transport)
    adds = member_requests(attentive_emulator, ADD)[1:]
    removes = member_requests(attentive_emulator, REMOVE)
    assert len(adds) == 1 and {m["phone"] for m in adds[0]} == phones(range(2000, 2300)) and len(adds[0]) == 300
    assert len(removes) == 1 and len(removes[0]) == 200
    assert {m["phone"] for m in removes[0]} == phones(range(200))
    assert summary["added"] == 300 and summary["removed"] == 200 and summary["bulk_jobs_submitted"] == 2
    assert members(attentive_emulator) == phones(range(200, 2300))
    assert statuses(warehouse) == {"ok": 2300} and memberships(warehouse) == {"in_segment": 2100, "out_of_segment": 200}

    again = run(warehouse, transport)
    assert again["planned"] == {"added": 0, "changed": 0, "removed": 0, "retired": 0}
    assert len(member_requests(attentive_emulator, ADD)) == 2 and len(member_requests(attentive_emulator, REMOVE)) == 1


def test_an_empty_model_removes_nobody_unless_both_settings_say_so(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 50)
    run(warehouse, transport)
    delete_customers(warehouse, "1 = 1")

    blocked = engine(warehouse, transport, max_removals=1.0)
    with pytest.raises(SyncAborted, match="no rows"):
        blocked.run()
    assert blocked.summary.extra["blocked_removals"] == 50
    assert attentive_emulator.client.requests(endpoint=REMOVE) == []
    assert members(attentive_emulator) == phones(range(50))

    emptied = run(warehouse, transport, allow_empty_source=True, max_removals=1.0)
    assert emptied["removed"] == 50 and emptied["succeeded"]["removed"] == 50
    assert len(member_requests(attentive_emulator, REMOVE)) == 1
    assert members(attentive_emulator) == set()


def test_removals_above_max_removals_remove_nobody_and_name_the_count(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 50)
    run(warehouse, transport)
    delete_customers(warehouse, "customer_id < 20")  # 40% of the members, above the default 20%
    add_customers(warehouse, [100, 101])

    blocked = engine(warehouse, transport)
    with pytest.raises(SyncAborted) as info:
        blocked.run()
    assert "20 of 50" in str(info.value) and "max_removals" in str(info.value)
    assert blocked.summary.extra["blocked_removals"] == 20
    assert attentive_emulator.client.requests(endpoint=REMOVE) == []
    assert len(member_requests(attentive_emulator, ADD)) == 1, "not even the newcomers go out"
    assert members(attentive_emulator) == phones(range(50))

    done = run(warehouse, transport, max_removals=20)
    assert done["removed"] == 20 and done["added"] == 2
    assert members(attentive_emulator) == phones(range(20, 50)) | phones([100, 101])


# ---------------------------------------------------------------------------------------- add, remove ----


def test_add_mode_never_removes(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 30)
    run(warehouse, transport, mode="add")
    delete_customers(warehouse, "customer_id < 25")
    add_customers(warehouse, [40])
    summary = run(warehouse, transport, mode="add")
    assert summary["added"] == 1 and summary["removed"] == 0
    assert attentive_emulator.client.requests(endpoint=REMOVE) == []
    assert members(attentive_emulator) == phones(range(30)) | phones([40])


def test_remove_mode_removes_the_model_once_and_a_non_member_counts_as_removed(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 30)
    run(warehouse, transport, mode="add")
    add_customers(warehouse, [99])  # never added: Attentive's line says "not a member"
    leaving = "SELECT customer_id, phone, email FROM customers WHERE customer_id < 10 OR customer_id = 99"

    summary = run(warehouse, transport, mode="remove", sql=leaving)
    removes = member_requests(attentive_emulator, REMOVE)
    assert len(removes) == 1 and {m["phone"] for m in removes[0]} == phones([*range(10), 99])
    assert summary["removed"] == 11 and summary["succeeded"]["removed"] == 11 and summary["rejected"] == 0
    assert members(attentive_emulator) == phones(range(10, 30))
    assert state_row(warehouse, "99")["status"] == "ok" and state_row(warehouse, "99")["member"] == "out_of_segment"

    before = log_size(attentive_emulator)
    again = run(warehouse, transport, mode="remove", sql=leaving)
    assert endpoints_since(attentive_emulator, before) == ["segment_read"]
    assert again["unchanged"] == 11


# ------------------------------------------------------------------------------------------ jobs ----


def test_held_jobs_keep_their_rows_waiting_unsent_until_released(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 100)
    attentive_emulator.client.set_job_settings(hold=True)
    first = run(warehouse, transport, wait_s=0.1)
    assert first["bulk_jobs_submitted"] == 1 and first["bulk_jobs_pending"] == 1
    assert first["awaiting_results"] == 100 and first["added"] == 0 and first["succeeded"]["added"] == 0
    assert statuses(warehouse) == {"submitted": 100}
    assert members(attentive_emulator) == set()

    second = run(warehouse, transport, wait_s=0.1)
    assert second["awaiting_job"] == 100 and second["bulk_jobs_submitted"] == 0
    assert len(member_requests(attentive_emulator, ADD)) == 1
    assert statuses(warehouse) == {"submitted": 100}

    attentive_emulator.client.release_jobs()
    attentive_emulator.client.set_job_settings(delay_s=0.05)
    wait_for_jobs(attentive_emulator)
    third = run(warehouse, transport)
    assert third["reconciled"] == {"ok": 100, "rejected": 0, "failed": 0} and third["added"] == 100
    assert len(member_requests(attentive_emulator, ADD)) == 1
    assert statuses(warehouse) == {"ok": 100} and members(attentive_emulator) == phones(range(100))


def test_failed_jobs_fail_their_rows_which_the_next_run_sends_again(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 100)
    attentive_emulator.client.set_job_settings(delay_s=0.05, fail_rate=1.0)
    first = run(warehouse, transport, member_batch_size=40)
    assert first["bulk_jobs_submitted"] == 3 and first["failed"]["added"] == 100
    assert first["succeeded"]["added"] == 0 and first["added"] == 0
    assert statuses(warehouse) == {"failed": 100} and members(attentive_emulator) == set()

    attentive_emulator.client.set_job_settings(delay_s=0.05)
    second = run(warehouse, transport)
    resent = member_requests(attentive_emulator, ADD)[3:]
    assert len(resent) == 1 and {m["phone"] for m in resent[0]} == phones(range(100))
    assert second["added"] == 100 and statuses(warehouse) == {"ok": 100}
    assert members(attentive_emulator) == phones(range(100))


def test_dropped_and_garbled_lines_are_never_counted_done_and_are_resent(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 400)
    attentive_emulator.client.set_job_settings(delay_s=0.05, drop_line_rate=0.1, garble_line_rate=0.1, seed=11)
    first = run(warehouse, transport, member_batch_size=100)
    failed = {pk for pk, row in ((str(i), state_row(warehouse, str(i))) for i in range(400)) if row["status"] != "ok"}
    jobs = attentive_emulator.client.jobs()
    dropped = sum(j["records"] - j["results_lines"] for j in jobs)
    assert len(jobs) == 4 and 0 < dropped < len(failed) < 140  # garbled lines fail their rows too
    assert first["failed"]["added"] == len(failed) and first["succeeded"]["added"] == 400 - len(failed)
    assert first["added"] == 400 - len(failed)
    assert {state_row(warehouse, pk)["status"] for pk in failed} == {"failed"}

    attentive_emulator.client.set_job_settings(delay_s=0.05)
    second = run(warehouse, transport)
    resent = member_requests(attentive_emulator, ADD)[len(jobs) :]
    assert len(resent) == 1 and {m["phone"] for m in resent[0]} == phones([int(pk) for pk in failed])
    assert second["added"] == len(failed) and second["unchanged"] == 400 - len(failed)
    assert statuses(warehouse) == {"ok": 400} and members(attentive_emulator) == phones(range(400))


class BadPhoneForRow7(SegmentsType):
    """Row 7 reaches Attentive with a phone it refuses: its line of the job's results says 400."""

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        prepared = super().prepare(row, key)
        if key == "7" and isinstance(prepared, Prepared):
            prepared.identity["phone"] = prepared.payload["phone"] = "555-0100"
        return prepared


def test_a_4xx_line_rejects_its_row_with_the_message_and_it_is_not_resent_until_it_changes(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 20)
    spec = segments().segment

    def obj() -> SegmentsType:
        return BadPhoneForRow7(segment=spec, primary_key="customer_id", mapping=None, default_region=None)

    first = run(warehouse, transport, obj=obj())
    assert first["rejected"] == 1 and first["added"] == 19
    rejected = [e for e in first["errors"] if e["key"] == "7"]
    assert rejected and rejected[0]["http_status"] == 400 and "E.164" in rejected[0]["reason"]
    assert state_row(warehouse, "7")["status"] == "rejected" and state_row(warehouse, "7")["message"]
    assert members(attentive_emulator) == phones(range(20)) - {phone(7)}

    again = run(warehouse, transport, obj=obj())
    assert again["skipped_rejected"] == 1 and len(member_requests(attentive_emulator, ADD)) == 1

    update_customer(warehouse, 7, email="fixed7@example.com")
    fixed = run(warehouse, transport)
    assert member_requests(attentive_emulator, ADD)[1:] == [[{"phone": phone(7), "email": "fixed7@example.com"}]]
    assert fixed["added"] == 1 and phone(7) in members(attentive_emulator)


# ------------------------------------------------------------------------------- identifier changes ----


def test_a_disjoint_identifier_change_adds_the_new_set_then_removes_the_old_one_in_a_later_run(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 10)
    run(warehouse, transport)
    update_customer(warehouse, 3, phone=phone(503), email="new3@example.com")

    changed = run(warehouse, transport)
    assert member_requests(attentive_emulator, ADD)[1:] == [[{"phone": phone(503), "email": "new3@example.com"}]]
    assert member_requests(attentive_emulator, REMOVE) == [], "the old set goes only after the add has completed"
    assert changed["succeeded"]["changed"] == 1 and changed["retired_identifiers"] == 0
    assert phone(3) in members(attentive_emulator) and phone(503) in members(attentive_emulator)

    retiring = run(warehouse, transport)
    assert member_requests(attentive_emulator, REMOVE) == [[{"phone": phone(3), "email": "user3@example.com"}]]
    order = [r["endpoint"] for r in attentive_emulator.client.requests() if r["endpoint"] in MEMBER_ENDPOINTS]
    assert order == [ADD, ADD, REMOVE]
    assert retiring["retired_identifiers"] == 1 and retiring["succeeded"]["retired"] == 1
    assert members(attentive_emulator) == phones([0, 1, 2, 4, 5, 6, 7, 8, 9, 503])
    assert json.loads(state_row(warehouse, "3")["identity"]) == {"phone": phone(503), "email": "new3@example.com"}

    before = log_size(attentive_emulator)
    run(warehouse, transport)
    assert endpoints_since(attentive_emulator, before) == ["segment_read"]


def test_a_change_that_keeps_the_email_removes_nothing(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 10)
    run(warehouse, transport)
    update_customer(warehouse, 4, phone=phone(504))
    first = run(warehouse, transport)
    second = run(warehouse, transport)
    assert member_requests(attentive_emulator, ADD)[1:] == [[{"phone": phone(504), "email": "user4@example.com"}]]
    assert attentive_emulator.client.requests(endpoint=REMOVE) == []
    assert first["retired_identifiers"] == second["retired_identifiers"] == 0
    assert second["planned"] == {"added": 0, "changed": 0, "removed": 0, "retired": 0}


def test_with_jobs_held_the_old_identifiers_are_not_removed_before_the_add_completes(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    client = attentive_emulator.client
    create_customers(warehouse, 10)
    run(warehouse, transport)
    update_customer(warehouse, 5, phone=phone(505), email="new5@example.com")
    client.set_job_settings(hold=True)
    run(warehouse, transport, wait_s=0.1)
    run(warehouse, transport, wait_s=0.1)
    assert client.requests(endpoint=REMOVE) == [] and statuses(warehouse) == {"ok": 9, "submitted": 1}

    client.release_jobs()
    client.set_job_settings(delay_s=0.05)
    for _ in range(2):  # one run reads the add's results; the removal may go out in it or in the next
        run(warehouse, transport)
    add_job = client.jobs()[1]
    removals = client.requests(endpoint=REMOVE)
    assert [r["body"]["members"] for r in removals] == [[{"phone": phone(5), "email": "user5@example.com"}]]
    assert add_job["completed_at"] is not None and removals[0]["received_at"] >= add_job["completed_at"]
    assert phone(5) not in members(attentive_emulator) and phone(505) in members(attentive_emulator)


def test_a_leaver_sharing_an_email_with_someone_who_stays_is_not_removed(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 10)
    for pk in (1, 2):
        update_customer(warehouse, pk, email="family@example.com")
    run(warehouse, transport)
    delete_customers(warehouse, "customer_id = 2")
    summary = run(warehouse, transport)
    assert summary["kept_shared"] == 1 and summary["succeeded"]["removed"] == 1
    for request in member_requests(attentive_emulator, REMOVE):
        assert all(m.get("email") != "family@example.com" for m in request)
    assert state_row(warehouse, "2")["member"] == "out_of_segment"
    assert phone(1) in members(attentive_emulator)


# --------------------------------------------------------------------------------- the segment itself ----


def create_elsewhere(emu: Emulator, external_id: str = SEGMENT, *, archive: bool = False) -> None:
    """A segment made through Attentive's API by someone else (and archived, if asked)."""
    with v2_client(emu.url) as api:
        assert api.post("/segments", json={"externalId": external_id, "name": "Made by hand"}).status_code == 201
        if archive:
            assert api.delete(f"/segments/external/{external_id}").status_code in (200, 204)


def test_an_archived_segment_is_a_configuration_error_and_nothing_is_sent(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 10)
    create_elsewhere(attentive_emulator, archive=True)
    with pytest.raises(SyncConfigError, match="archived"):
        run(warehouse, transport)
    for endpoint in MEMBER_ENDPOINTS:
        assert attentive_emulator.client.requests(endpoint=endpoint) == []


def test_a_segment_created_elsewhere_is_refused_unless_adopted(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 10)
    create_elsewhere(attentive_emulator)
    with pytest.raises(SyncConfigError, match="adopt_existing_segment"):
        run(warehouse, transport)
    assert attentive_emulator.client.requests(endpoint=ADD) == []

    adopted = run(warehouse, transport, obj=segments(adopt_existing=True))
    assert adopted["segment"] == "updated" and adopted["added"] == 10  # its name is the sync's now
    assert attentive_emulator.client.segments()[SEGMENT]["name"] == "VIP Gold"
    origin = warehouse.execute("SELECT origin FROM attentive_sync_segments WHERE sync_id = ?", (SYNC_ID,)).fetchall()
    assert origin == [("adopted",)]
    assert run(warehouse, transport)["segment"] == "unchanged"  # adopted once, its own from then on


def test_a_new_external_id_for_the_same_sync_is_refused(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 10)
    run(warehouse, transport)
    before = log_size(attentive_emulator)
    with pytest.raises(SyncConfigError, match="keeps segment 'vip_gold'"):
        run(warehouse, transport, obj=segments("vip_silver"))
    assert endpoints_since(attentive_emulator, before) == []
    assert "vip_silver" not in attentive_emulator.client.segments()


def test_a_new_name_is_one_patch(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 10)
    run(warehouse, transport)
    renamed = run(warehouse, transport, obj=segments(name="VIP Gold Members"))
    again = run(warehouse, transport, obj=segments(name="VIP Gold Members"))
    patches = attentive_emulator.client.requests(endpoint="segment_update")
    assert [p["body"] for p in patches] == [{"name": "VIP Gold Members"}]
    assert renamed["segment"] == "updated" and again["segment"] == "unchanged"
    assert attentive_emulator.client.segments()[SEGMENT]["name"] == "VIP Gold Members"


def test_a_key_without_segments_write_fails_before_any_member_request(
    warehouse: sqlite3.Connection, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 10)
    attentive_emulator.client.add_key("seg-read-only", scopes=[s for s in ALL_SCOPES if s != "segments:write"])
    with (
        make_transport(attentive_emulator.url, api_key="seg-read-only") as sender,
        pytest.raises(SyncConfigError, match="segments:write"),
    ):
        run(warehouse, sender)
    for endpoint in MEMBER_ENDPOINTS:
        assert attentive_emulator.client.requests(endpoint=endpoint) == []
    assert SEGMENT not in attentive_emulator.client.segments()


def test_a_key_without_segments_write_on_an_existing_segment_stops_at_the_first_member_request(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 10)
    run(warehouse, transport)
    add_customers(warehouse, [20])
    attentive_emulator.client.add_key("seg-read-only", scopes=[s for s in ALL_SCOPES if s != "segments:write"])
    with (
        make_transport(attentive_emulator.url, api_key="seg-read-only") as sender,
        pytest.raises(AttentiveAuthError, match="segments:write"),
    ):
        run(warehouse, sender)
    refused = attentive_emulator.client.requests(endpoint=ADD)[1:]
    assert [r["status"] for r in refused] == [403], "one refused request, then the run stops"
    assert state_row(warehouse, "20")["status"] == "failed" and phone(20) not in members(attentive_emulator)
    healed = run(warehouse, transport)
    assert healed["added"] == 1 and phone(20) in members(attentive_emulator)


# ---------------------------------------------------------------------------------------- dry run ----


def test_a_dry_run_only_reads_and_shows_masked_who_would_be_added_and_removed(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 20)
    fresh = run(warehouse, transport, dry_run=True)
    assert fresh["segment"] == "would create" and fresh["planned"]["added"] == 20
    assert {r["method"] for r in attentive_emulator.client.requests()} == {"GET"}
    assert SEGMENT not in attentive_emulator.client.segments()

    run(warehouse, transport)
    delete_customers(warehouse, "customer_id IN (3, 4)")
    add_customers(warehouse, [30, 31, 32])
    before = log_size(attentive_emulator)
    preview = run(warehouse, transport, dry_run=True, obj=segments(name="Renamed"))
    assert {r["method"] for r in attentive_emulator.client.requests()[before:]} == {"GET"}
    assert preview["segment"] == "would update"
    assert preview["planned"] == {"added": 3, "changed": 0, "removed": 2, "retired": 0}
    assert len(preview["would_send"]["added"]) == 3 and len(preview["would_send"]["removed"]) == 2
    assert preview["samples"], "a dry run shows what it would send"
    text = json.dumps(preview)
    for i in [*range(20), 30, 31, 32]:
        assert phone(i) not in text and phone(i).lstrip("+") not in text, "a phone in clear in the summary"
    assert members(attentive_emulator) == phones(range(20))
    assert attentive_emulator.client.segments()[SEGMENT]["name"] == "VIP Gold"


# ---------------------------------------------------------------------------------- hostile state ----


def test_state_rows_this_version_never_writes_are_held_not_removed_nor_added_again(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 20)
    run(warehouse, transport)
    damage = "UPDATE attentive_sync_state SET {} WHERE pk = ?"
    warehouse.execute(damage.format("identity = 'not json'"), ("3",))  # changed below: needs a request
    warehouse.execute(damage.format("member = 'maybe'"), ("4",))  # changed below
    warehouse.execute(damage.format("identity = '{\"retired\": 7}'"), ("5",))  # leaves the model
    warehouse.commit()
    warehouse.execute(
        "UPDATE customers SET email = 'other' || customer_id || '@example.com' WHERE customer_id IN (3, 4)"
    )
    delete_customers(warehouse, "customer_id = 5")

    before = log_size(attentive_emulator)
    summary = run(warehouse, transport)
    assert summary["held_unknown_state"] == 3, summary["errors"]
    reasons = {e["key"]: e["reason"] for e in summary["errors"]}
    assert set(reasons) == {"3", "4", "5"} and "not removed" in reasons["5"] and "'maybe'" in reasons["4"]
    assert [e for e in endpoints_since(attentive_emulator, before) if e in MEMBER_ENDPOINTS] == []
    assert members(attentive_emulator) == phones(range(20))
    assert run(warehouse, transport)["held_unknown_state"] == 3, "held until someone fixes the rows"
    assert [e for e in endpoints_since(attentive_emulator, before) if e in MEMBER_ENDPOINTS] == []


# ------------------------------------------------------------------------- subscriptions, messages ----


def test_a_sequence_of_runs_of_every_kind_asks_for_no_subscription_and_texts_nobody(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    client = attentive_emulator.client
    create_customers(warehouse, 60)
    run(warehouse, transport, member_batch_size=25)
    delete_customers(warehouse, "customer_id < 5")
    add_customers(warehouse, range(100, 105))
    update_customer(warehouse, 10, phone=phone(510), email="x10@example.com")
    run(warehouse, transport)
    run(warehouse, transport, mode="add")
    run(warehouse, transport, mode="remove", sql=f"{SQL} WHERE customer_id >= 100")
    client.set_job_settings(delay_s=0.05, fail_rate=0.5, seed=3)
    run(warehouse, transport, mode="mirror", dry_run=True)
    run(warehouse, transport)
    client.set_job_settings(delay_s=0.05)
    run(warehouse, transport)
    assert len(client.requests(endpoint=ADD)) >= 3 and len(client.requests(endpoint=REMOVE)) >= 2
    for endpoint in ("subscribe", "unsubscribe", "subscriptions_read", "bulk"):
        assert client.requests(endpoint=endpoint) == []
    assert client.messages() == [] and client.stats()["bulk_users_with_subscriptions"] == 0
