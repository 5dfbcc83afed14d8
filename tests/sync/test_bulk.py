"""Custom attributes through v2 bulk jobs, against the emulator: submit, record, wait, reconcile, never lose a row."""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import pytest

from airflow_provider_attentive.client import AttentiveTransport
from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.bulk import read_line
from airflow_provider_attentive.sync.engine import SyncEngine, SyncOptions
from airflow_provider_attentive.sync.object_type import Invalid, Prepared
from airflow_provider_attentive.sync.objects import AttributesType
from airflow_provider_attentive.sync.objects.attributes import BulkAttributesDelivery, BulkMode
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.state import StateStore
from tests.helpers.crash import assert_accounted
from tests.helpers.engine import transport as make_transport
from tests.helpers.objects import attributes
from tests.helpers.records import bodies, request_count
from tests.helpers.warehouse import create_customers

SQL = "SELECT customer_id, phone, email, loyalty_tier, ltv FROM customers"


def bulk_run(
    conn: sqlite3.Connection,
    sender: Any,
    *,
    mode: BulkMode = True,
    wait_s: float = 10.0,
    obj: AttributesType | None = None,
    **options: Any,
) -> tuple[dict[str, Any], BulkAttributesDelivery]:
    delivery = BulkAttributesDelivery(
        sender,
        mode=mode,
        threshold=options.pop("threshold", 0),
        batch_size=options.pop("bulk_batch_size", 256),
        wait_s=wait_s,
        poll_interval_s=0.1,
    )
    options.setdefault("sync_id", "bulk.sync")
    options.setdefault("max_failed_ratio", 1.0)
    engine = SyncEngine(
        obj or attributes(),
        SyncOptions(**options),
        source=SqlSource(conn, SQL, chunk_size=1000),
        state=StateStore(conn),
        sender=sender,
        delivery=delivery,
    )
    return engine.run(), delivery


def statuses(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, COUNT(*) FROM attentive_sync_state GROUP BY status").fetchall())


def test_5000_rows_go_out_in_ceil_5000_over_256_requests_and_a_rerun_sends_nothing(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 5000)
    summary, _ = bulk_run(warehouse, transport)

    assert request_count(attentive_emulator, "bulk") == math.ceil(5000 / 256) == summary["bulk_jobs_submitted"]
    assert request_count(attentive_emulator, "attributes") == 0
    assert summary["succeeded"]["added"] == 5000 and summary["bulk_jobs_completed"] == 20
    assert summary["awaiting_results"] == 0 and summary["bulk_jobs_pending"] == 0
    assert_accounted(summary)
    assert statuses(warehouse) == {"ok": 5000}
    sent = bodies(attentive_emulator, "bulk")  # each checked against the v2 UserAttributes schema
    users = [u for body in sent for u in body["users"]]
    assert len(users) == 5000 and all("subscriptions" not in u for u in users)
    assert users[7]["attributes"]["custom"]["loyalty_tier"] in ("gold", "silver")
    stored = attentive_emulator.client.attributes()
    assert len(stored) == 5000
    downloads = attentive_emulator.client.results_downloads()
    assert downloads and not any(hit["authorization"] for hit in downloads)  # the key never reaches the link
    assert attentive_emulator.client.stats()["bulk_users_with_subscriptions"] == 0

    again, _ = bulk_run(warehouse, transport)
    assert again["unchanged"] == 5000 and again["requests"] == 0
    assert request_count(attentive_emulator, "bulk") == 20


def test_held_jobs_are_reconciled_by_the_next_run_without_a_resubmission(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 600)
    attentive_emulator.client.set_job_settings(hold=True)
    first, _ = bulk_run(warehouse, transport, wait_s=0)
    assert first["bulk_jobs_submitted"] == 3 and first["bulk_jobs_pending"] == 3
    assert first["awaiting_results"] == 600 and statuses(warehouse) == {"submitted": 600}
    assert_accounted({**first, "remaining": first["remaining"] + first["awaiting_results"]})

    # Changed while its job runs: waits for the job, so an older value can never land after a newer one.
    warehouse.execute("UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id < 10")
    warehouse.commit()
    second, _ = bulk_run(warehouse, transport, wait_s=0)
    assert second["awaiting_job"] == 600 and request_count(attentive_emulator, "bulk") == 3

    attentive_emulator.client.release_jobs()
    attentive_emulator.client.set_job_settings()  # new jobs complete again
    deadline = time.monotonic() + 10
    while any(job["status"] != "COMPLETED" for job in attentive_emulator.client.jobs()):
        assert time.monotonic() < deadline, "released jobs did not complete"
        time.sleep(0.05)
    third, _ = bulk_run(warehouse, transport, wait_s=10)
    assert third["reconciled"] == {"ok": 600, "rejected": 0, "failed": 0}
    assert third["succeeded"]["changed"] == 10  # the ten changed rows go out now, after their first job
    assert request_count(attentive_emulator, "bulk") == 4
    assert statuses(warehouse) == {"ok": 600}


def test_failed_jobs_and_missing_result_lines_are_resent_never_counted_done(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 1000)
    attentive_emulator.client.set_job_settings(fail_rate=0.5, drop_line_rate=0.1, garble_line_rate=0.05, seed=7)
    first, _ = bulk_run(warehouse, transport, bulk_batch_size=50)
    ok = first["succeeded"]["added"]
    failed = first["failed"]["added"]
    assert ok + failed == 1000 and 0 < ok < 900 and first["bulk_jobs_submitted"] == 20
    assert statuses(warehouse) == {"ok": ok, "failed": failed}

    attentive_emulator.client.set_job_settings()
    second, _ = bulk_run(warehouse, transport)
    assert second["succeeded"]["added"] == failed and second["unchanged"] == ok
    assert statuses(warehouse) == {"ok": 1000} and len(attentive_emulator.client.attributes()) == 1000


class NestedForRow7(AttributesType):
    """Row 7 carries a map as an attribute, which Attentive refuses for the whole request (a 400)."""

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        prepared = super().prepare(row, key)
        if key == "7" and isinstance(prepared, Prepared):
            prepared.payload["properties"]["loyalty_tier"] = {"tier": "gold"}
        return prepared


def test_a_refused_batch_is_split_until_the_offending_user_is_alone(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 300)
    obj = NestedForRow7(primary_key="customer_id", mapping=None, default_region=None)
    summary, _ = bulk_run(warehouse, transport, obj=obj)
    assert summary["rejected"] == 1 and summary["succeeded"]["added"] == 299
    assert [e["key"] for e in summary["errors"]] == ["7"]
    assert len(attentive_emulator.client.attributes()) == 299
    # 2 batches; the refused one (256) halves down to the one user: 2 + 2 * 8 requests
    assert request_count(attentive_emulator, "bulk") == 2 + 2 * 8


@pytest.mark.parametrize("access", ["scope", "v2"])
def test_auto_falls_back_to_v1_when_the_key_cannot_use_bulk_jobs(
    warehouse: sqlite3.Connection, attentive_emulator: Emulator, access: str
) -> None:
    create_customers(warehouse, 300)
    if access == "scope":
        attentive_emulator.client.add_key("no-subs", scopes=["attributes:write"])
    else:
        attentive_emulator.client.add_key("no-subs", v2_access=False)
    with make_transport(attentive_emulator.url, api_key="no-subs") as sender:
        summary, _ = bulk_run(warehouse, sender, mode="auto", threshold=100)
    assert summary["succeeded"]["added"] == 300 and summary["bulk_jobs_submitted"] == 0
    assert "v1" in summary["bulk_fallback"] and str(403 if access == "scope" else 404) in summary["bulk_fallback"]
    assert request_count(attentive_emulator, "attributes") == 300


def test_auto_below_the_threshold_goes_through_v1(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    create_customers(warehouse, 50)
    summary, _ = bulk_run(warehouse, transport, mode="auto", threshold=51)
    assert summary["succeeded"]["added"] == 50 and request_count(attentive_emulator, "bulk") == 0
    assert request_count(attentive_emulator, "attributes") == 50


@pytest.mark.parametrize(
    "response, outcome",
    [
        ({"status": 200}, "ok"),
        ({"status": 202, "message": "accepted"}, "ok"),
        ({"status": 400, "message": "phone is not E.164"}, "rejected"),
        ({"status": 404}, "rejected"),
        ({"status": 403, "message": "no"}, "failed"),
        ({"status": 429}, "failed"),
        ({"status": 500}, "failed"),
        ({"status": "200"}, "failed"),
        ({"status": True}, "failed"),
        ({}, "failed"),
    ],
)
def test_a_results_line_is_read_defensively(response: dict[str, Any], outcome: str) -> None:
    result = read_line("k", response)
    assert result.outcome.value == outcome
    assert result.status not in (401, 403)  # a line never stops the run as if this run's key were refused


class UnreadablePhoneForRow7(AttributesType):
    """Row 7 reaches Attentive with a phone it refuses (not E.164): one line of the job's results says 400."""

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        prepared = super().prepare(row, key)
        if key == "7" and isinstance(prepared, Prepared):
            prepared.payload["user"]["phone"] = "555-0100"
        return prepared


def test_a_per_item_rejection_in_the_results_is_recorded_and_not_resent_until_the_row_changes(
    warehouse: sqlite3.Connection,
    transport: AttentiveTransport,
    attentive_emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    create_customers(warehouse, 300)
    obj = UnreadablePhoneForRow7(primary_key="customer_id", mapping=None, default_region=None)
    caplog.set_level("INFO", logger="airflow_provider_attentive.sync")
    summary, _ = bulk_run(warehouse, transport, obj=obj, progress_interval_s=0)
    assert summary["rejected"] == 1 and summary["succeeded"]["added"] == 299
    rejected = [e for e in summary["errors"] if e["key"] == "7"]
    assert rejected and rejected[0]["http_status"] == 400 and "E.164" in rejected[0]["reason"]
    assert statuses(warehouse) == {"ok": 299, "rejected": 1}
    assert any("bulk jobs submitted 2, finished" in r.getMessage() for r in caplog.records)

    again, _ = bulk_run(warehouse, transport, obj=obj)
    assert again["skipped_rejected"] == 1 and request_count(attentive_emulator, "bulk") == 2
