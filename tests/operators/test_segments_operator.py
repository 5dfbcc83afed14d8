"""AttentiveSegmentsOperator: its parameters, templating, asset, summary XCom, deferral and configuration errors.

Each test runs the operator against a real SQLite warehouse (which also holds the state) and the emulator, as a
task would; the behaviour of the segments engine itself is tested in tests/sync.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.operators.attributes import AttentiveAttributesOperator
from airflow_provider_attentive.operators.segments import AttentiveSegmentsOperator
from airflow_provider_attentive.triggers.bulk_job import AttentiveBulkJobTrigger
from tests.helpers.emulator import release_and_finish, v2_client
from tests.helpers.operators import TaskInstance, context
from tests.helpers.phones import phone
from tests.helpers.records import request_count
from tests.helpers.warehouse import Warehouse, create_customers

SQL = "SELECT customer_id, phone, email FROM customers WHERE loyalty_tier = 'gold'"
SYNC_ID = "vip_gold_segment"
GOLD = 10  # create_customers(db, 20): the even ids are gold
NO_SEGMENTS = "k-no-segments-scope-1618"  # every scope but segments:read and segments:write
SUBSCRIPTION_ENDPOINTS = ("subscribe", "unsubscribe", "subscriptions_read")
SUMMARY_FIELDS = {
    "segment_external_id",
    "segment",
    "added",
    "removed",
    "retired_identifiers",
    "kept_shared",
    "blocked_removals",
    "bulk_jobs_submitted",
    "bulk_jobs_pending",
    "bulk_jobs_completed",
    "awaiting_results",
}


@pytest.fixture
def warehouse(attentive_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Warehouse:
    """20 customers (10 gold) in a SQLite warehouse, and the emulator's full key."""
    path = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    use_key(monkeypatch, attentive_emulator, "test-key")
    db = Warehouse(path)
    create_customers(db, 20)
    return db


@pytest.fixture
def v2(attentive_emulator: Emulator) -> Iterator[httpx.Client]:
    """Attentive's v2 API as someone other than the sync would use it (the UI, another tool)."""
    with v2_client(attentive_emulator.url) as client:
        yield client


def use_key(monkeypatch: pytest.MonkeyPatch, emu: Emulator, key: str) -> None:
    connection = {"conn_type": "attentive", "host": emu.url, "password": key}
    monkeypatch.setenv("AIRFLOW_CONN_ATTENTIVE_DEFAULT", json.dumps(connection))


def segment_sync(**kwargs: Any) -> AttentiveSegmentsOperator:
    """The VIP gold mirror, waiting (briefly) for its jobs in the worker; ``kwargs`` override."""
    settings: dict[str, Any] = {
        "task_id": "vip_gold_segment",
        "sync_id": SYNC_ID,
        "sql": SQL,
        "sql_conn_id": "warehouse",
        "primary_key": "customer_id",
        "segment_external_id": "vip_gold",
        "segment_name": "VIP Gold (warehouse)",
        "mode": "mirror",
        "default_region": "US",
        "bulk_wait": 30,
        "bulk_poll_interval": 0.1,
    }
    settings.update(kwargs)
    return AttentiveSegmentsOperator(**settings)


def members(emu: Emulator, external_id: str = "vip_gold") -> set[str]:
    return set(emu.client.segments()[external_id]["members"])


def member_requests(emu: Emulator) -> int:
    return request_count(emu, "segment_members_add") + request_count(emu, "segment_members_remove")


def assert_nobody_texted(emu: Emulator) -> None:
    """Segment membership is no subscription: no subscription endpoint was called and no message went out."""
    for endpoint in SUBSCRIPTION_ENDPOINTS:
        assert request_count(emu, endpoint) == 0, endpoint
    assert emu.client.messages() == []


class OutletEvents(dict[Asset, SimpleNamespace]):
    """The task context's ``outlet_events``: an accessor per asset, made on first use."""

    def __missing__(self, asset: Asset) -> SimpleNamespace:
        self[asset] = SimpleNamespace(extra={})
        return self[asset]


# ------------------------------------------------------------------------------------------ parameters ----


def test_mode_is_required_and_checked() -> None:
    settings: dict[str, Any] = {"task_id": "t", "sql": SQL, "sql_conn_id": "warehouse", "primary_key": "customer_id"}
    segment: dict[str, Any] = {"segment_external_id": "vip_gold", "segment_name": "VIP Gold"}
    with pytest.raises(TypeError, match="mode"):  # no default: adding or removing people is always explicit
        AttentiveSegmentsOperator(**settings, **segment)
    for mode in ("upsert", "sync", "Mirror"):
        with pytest.raises(ValueError, match="mode must be one of"):
            AttentiveSegmentsOperator(**settings, **segment, mode=mode)
    for mode in ("add", "remove", "mirror"):
        assert AttentiveSegmentsOperator(**settings, **segment, mode=mode).mode_default == mode


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"member_batch_size": 0}, "member_batch_size"),
        ({"member_batch_size": 10_001}, "member_batch_size"),
        ({"member_batch_size": True}, "member_batch_size"),
        ({"member_batch_size": 100.0}, "member_batch_size"),
        ({"bulk_wait": -1}, "bulk_wait"),
        ({"bulk_poll_interval": 0}, "bulk_poll_interval"),
        ({"segment_external_id": ""}, "segment_external_id"),
        ({"segment_external_id": "   "}, "segment_external_id"),
        ({"segment_external_id": " vip_gold"}, "segment_external_id"),
        ({"segment_external_id": "x" * 256}, "segment_external_id"),
        ({"segment_name": ""}, "segment_name"),
        ({"segment_name": "  "}, "segment_name"),
        ({"segment_name": "n" * 241}, "segment_name"),
        ({"segment_description": "x"}, "segment_description"),
        ({"segment_description": "d" * 501}, "segment_description"),
    ],
)
def test_bad_parameters_fail_when_the_operator_is_built(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        segment_sync(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"member_batch_size": 1},
        {"member_batch_size": 10_000},
        {"segment_external_id": "x" * 255, "segment_name": "n" * 240, "segment_description": "d" * 500},
        {"segment_description": "ok"},
    ],
)
def test_parameters_at_their_bounds_are_accepted(kwargs: dict[str, Any]) -> None:
    op = segment_sync(**kwargs)
    assert op.member_batch_size == kwargs.get("member_batch_size", 10_000)


def test_segment_fields_are_templated_and_checked_once_rendered(
    attentive_emulator: Emulator, warehouse: Warehouse
) -> None:
    op = segment_sync(
        segment_external_id="vip_{{ params.tier }}",
        segment_name="VIP {{ params.tier | title }} (warehouse)",
        segment_description="Customers of the {{ params.tier }} tier",
    )
    assert {"segment_external_id", "segment_name", "segment_description", "sql", "sync_id"} <= set(op.template_fields)
    op.render_template_fields({"params": {"tier": "gold"}})
    assert (op.segment_external_id, op.segment_name) == ("vip_gold", "VIP Gold (warehouse)")
    summary = op.execute(context())
    assert summary["segment_external_id"] == "vip_gold" and summary["segment"] == "created"
    segment = attentive_emulator.client.segments()["vip_gold"]
    assert (segment["name"], segment["description"]) == ("VIP Gold (warehouse)", "Customers of the gold tier")
    assert len(segment["members"]) == GOLD

    # A template that renders to a segment Attentive would refuse fails the task for good, before any request.
    before = attentive_emulator.client.stats()["endpoints"]
    bad = segment_sync(segment_external_id="{{ params.tier }}", sync_id="other_segment")
    bad.render_template_fields({"params": {"tier": " gold "}})
    with pytest.raises(AirflowFailException, match="misconfigured: segment_external_id"):
        bad.execute(context())
    after = attentive_emulator.client.stats()["endpoints"]
    assert all(after[name]["requests"] == before[name]["requests"] for name in after if name != "me")


# ------------------------------------------------------------------------- asset, lineage and summary ----


def test_emit_asset_names_the_segment_and_its_event_carries_the_counts(
    attentive_emulator: Emulator, warehouse: Warehouse
) -> None:
    op = segment_sync(emit_asset=True, sync_id="not_the_asset_name")
    asset = Asset(name="attentive://segments/vip_gold", uri="attentive://segments/vip_gold")
    assert op.asset == asset and asset in op.outlets
    events = OutletEvents()
    summary = op.execute(context(outlet_events=events))
    extra = events[asset].extra
    assert extra["segment_external_id"] == "vip_gold" and extra["segment"] == "created"
    assert extra["added"] == GOLD == extra["succeeded"]["added"] and extra["rows_read"] == GOLD
    assert extra["bulk_jobs_completed"] == 1 and extra["awaiting_results"] == 0
    assert "errors" not in extra and {k: summary[k] for k in extra} == extra
    assert list(events) == [asset]


def test_emit_asset_with_a_templated_name_fails_when_the_dag_is_parsed(warehouse: Warehouse) -> None:
    # The outlet is declared at parse time: a rendered name would send the run's event to another asset.
    with pytest.raises(ValueError, match="give a literal segment_external_id"):
        segment_sync(emit_asset=True, segment_external_id="vip_{{ ds_nodash }}")
    with pytest.raises(ValueError, match="give a literal sync_id"):
        AttentiveAttributesOperator(
            task_id="t", sql="SELECT 1", sql_conn_id="warehouse", primary_key="id", sync_id="{{ ds }}", emit_asset=True
        )
    assert segment_sync(segment_external_id="vip_{{ ds_nodash }}").outlets == []  # without an asset it is fine


def test_openlineage_destination_is_the_segment(warehouse: Warehouse) -> None:
    assert segment_sync().openlineage_destination() == "segments/vip_gold"
    assert (
        segment_sync(sync_id="x", segment_external_id="loyal-2026").openlineage_destination() == "segments/loyal-2026"
    )


def test_the_summary_xcom_has_the_segment_fields(attentive_emulator: Emulator, warehouse: Warehouse) -> None:
    ti = TaskInstance()
    summary = segment_sync(segment_description="Gold tier, from the warehouse").execute(context(ti))
    assert ti.xcom["summary"] == summary
    assert set(summary) >= SUMMARY_FIELDS
    assert summary["object_type"] == "segments" and summary["mode"] == "mirror"
    assert summary["segment"] == "created" and summary["segment_external_id"] == "vip_gold"
    assert summary["added"] == GOLD == summary["succeeded"]["added"] and summary["removed"] == 0
    assert set(summary["planned"]) == {"added", "changed", "removed", "retired"}
    assert (summary["bulk_jobs_submitted"], summary["bulk_jobs_completed"], summary["bulk_jobs_pending"]) == (1, 1, 0)
    assert summary["awaiting_results"] == 0 and summary["blocked_removals"] == 0
    assert members(attentive_emulator) == {phone(i) for i in range(0, 20, 2)}
    assert warehouse.query("SELECT sync_id, external_id, origin FROM attentive_sync_segments") == [
        (SYNC_ID, "vip_gold", "created")
    ]

    # Nothing changed: the segment is read, no member request goes out.
    sent = member_requests(attentive_emulator)
    again = segment_sync(segment_description="Gold tier, from the warehouse").execute(context())
    assert again["segment"] == "unchanged" and again["unchanged"] == GOLD
    assert again["added"] == 0 and again["bulk_jobs_submitted"] == 0
    assert member_requests(attentive_emulator) == sent

    # Two gold customers leave the model, one joins, and the segment is renamed.
    warehouse.execute("UPDATE customers SET loyalty_tier = 'silver' WHERE customer_id IN (0, 2)")
    warehouse.execute("UPDATE customers SET loyalty_tier = 'gold' WHERE customer_id = 1")
    moved = segment_sync(segment_name="VIP Gold").execute(context())
    assert moved["segment"] == "updated" and attentive_emulator.client.segments()["vip_gold"]["name"] == "VIP Gold"
    assert (moved["added"], moved["removed"]) == (1, 2)
    assert (moved["succeeded"]["added"], moved["succeeded"]["removed"]) == (1, 2)
    assert moved["bulk_jobs_submitted"] == 2 == moved["bulk_jobs_completed"]  # one add job, one remove job
    assert members(attentive_emulator) == {phone(i) for i in (1, *range(4, 20, 2))}
    assert_nobody_texted(attentive_emulator)


def test_a_dry_run_reads_the_segment_and_changes_nothing(attentive_emulator: Emulator, warehouse: Warehouse) -> None:
    summary = segment_sync(dry_run=True).execute(context())
    assert summary["segment"] == "would create" and summary["planned"]["added"] == GOLD
    assert attentive_emulator.client.segments() == {}
    assert request_count(attentive_emulator, "segment_read") == 1
    assert request_count(attentive_emulator, "segment_create") == 0 and member_requests(attentive_emulator) == 0
    assert warehouse.query("SELECT name FROM sqlite_master WHERE name LIKE 'attentive%'") == []


# ------------------------------------------------------------------------------------------- deferral ----


def test_deferrable_defers_with_its_job_ids_and_execute_complete_reconciles_them(
    attentive_emulator: Emulator, warehouse: Warehouse
) -> None:
    client = attentive_emulator.client
    client.set_job_settings(hold=True)
    op = segment_sync(member_batch_size=4, deferrable=True, bulk_wait=120, bulk_poll_interval=1)
    ti = TaskInstance()
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        op.execute(context(ti))
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    trigger = deferred.trigger
    assert isinstance(trigger, AttentiveBulkJobTrigger)
    jobs = [job["id"] for job in client.jobs()]
    assert len(jobs) == 3 and sorted(trigger.job_ids) == sorted(jobs)  # 4 + 4 + 2 members
    assert trigger.poll_interval == 1.0 and before + 120 <= trigger.deadline <= time.time() + 120
    assert trigger.attentive_conn_id == "attentive_default"
    _, kwargs = trigger.serialize()
    assert "test-key" not in json.dumps(kwargs)
    # The worker did not poll: the summary before deferring says the members await their jobs.
    first = ti.xcom["summary"]
    assert first["bulk_jobs_submitted"] == 3 and first["awaiting_results"] == GOLD
    assert first["added"] == 0 and first["segment"] == "created"
    assert request_count(attentive_emulator, "bulk_job") == 0
    assert dict(warehouse.statuses(SYNC_ID)) == {"submitted": GOLD}

    release_and_finish(attentive_emulator)
    jobs_event = {job: {"id": job, "status": "COMPLETED", "finished": True} for job in jobs}
    summary = op.execute_complete(context(ti), {"status": "done", "jobs": jobs_event, "message": "3 bulk job(s)"})
    assert summary["reconciled"] == {"ok": GOLD, "rejected": 0, "failed": 0}
    assert summary["added"] == GOLD  # confirmed in this run, reconciled ones included
    assert summary["bulk_jobs_submitted"] == 0 and summary["bulk_jobs_pending"] == 0
    assert summary["segment"] == "unchanged"
    assert ti.xcom["summary"] == summary
    assert request_count(attentive_emulator, "segment_members_add") == 3, "the resumed run submitted again"
    assert dict(warehouse.statuses(SYNC_ID)) == {"ok": GOLD}
    assert members(attentive_emulator) == {phone(i) for i in range(0, 20, 2)}
    assert_nobody_texted(attentive_emulator)


def test_deferrable_does_not_defer_when_nothing_is_open(attentive_emulator: Emulator, warehouse: Warehouse) -> None:
    segment_sync().execute(context())
    # Nothing to send, and so no job to wait for: the task ends in the worker.
    summary = segment_sync(deferrable=True).execute(context())
    assert summary["bulk_jobs_submitted"] == 0 and summary["unchanged"] == GOLD


# ------------------------------------------------------------------------------- configuration errors ----


def test_an_archived_segment_fails_the_task_before_any_member_request(
    attentive_emulator: Emulator, warehouse: Warehouse, v2: httpx.Client
) -> None:
    assert v2.post("/segments", json={"name": "Old gold", "externalId": "vip_gold"}).status_code == 201
    assert v2.delete("/segments/external/vip_gold").status_code == 204  # archived: its external id stays taken
    ti = TaskInstance()
    with pytest.raises(AirflowFailException, match="archived segment keeps its external id") as info:
        segment_sync().execute(context(ti))
    assert "test-key" not in str(info.value)
    assert request_count(attentive_emulator, "segment_create") == 2  # the archived one's, then the sync's 409
    assert member_requests(attentive_emulator) == 0 and attentive_emulator.client.jobs() == []
    assert ti.xcom["summary"]["segment_external_id"] == "vip_gold"
    assert warehouse.statuses(SYNC_ID) == {}
    assert_nobody_texted(attentive_emulator)


def test_a_segment_this_sync_did_not_create_is_adopted_only_when_asked(
    attentive_emulator: Emulator, warehouse: Warehouse, v2: httpx.Client
) -> None:
    created = v2.post("/segments", json={"name": "Hand-made", "externalId": "vip_gold"})
    assert created.status_code == 201
    with pytest.raises(AirflowFailException, match="adopt_existing_segment=True"):
        segment_sync().execute(context())
    assert member_requests(attentive_emulator) == 0

    summary = segment_sync(adopt_existing_segment=True).execute(context())
    assert summary["segment"] == "updated" and summary["added"] == GOLD
    assert attentive_emulator.client.segments()["vip_gold"]["name"] == "VIP Gold (warehouse)"
    assert warehouse.query("SELECT origin FROM attentive_sync_segments WHERE sync_id = ?", (SYNC_ID,)) == [("adopted",)]


def test_a_key_without_the_segments_scope_fails_naming_it(
    attentive_emulator: Emulator, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    scopes = ["attributes:write", "events:write", "subscriptions:write", "subscriptions:read"]
    attentive_emulator.client.add_key(NO_SEGMENTS, scopes=scopes)
    use_key(monkeypatch, attentive_emulator, NO_SEGMENTS)
    with pytest.raises(AirflowFailException, match="segments:read") as info:
        segment_sync().execute(context())
    assert NO_SEGMENTS not in str(info.value)
    assert request_count(attentive_emulator, "segment_create") == 0 and member_requests(attentive_emulator) == 0
