"""AttentiveAttributesOperator through v2 bulk jobs: the access check, the fallback, its parameters, deferral."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.operators.attributes import AttentiveAttributesOperator
from airflow_provider_attentive.triggers.bulk_job import AttentiveBulkJobTrigger
from tests.helpers.emulator import release_and_finish
from tests.helpers.operators import TaskInstance, context, operator
from tests.helpers.records import request_count
from tests.helpers.warehouse import Warehouse, create_customers

SQL = "SELECT customer_id, phone, email, loyalty_tier, ltv FROM customers"
NO_SUBS = "k-bulk-no-subscriptions-3141"  # attributes:write only
NO_BETA = "k-bulk-no-v2-access-2718"  # every scope, but not let into the v2 beta


@pytest.fixture
def warehouse(attentive_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Warehouse:
    """20 customers in a SQLite warehouse (which also holds the state), and the emulator's full key."""
    path = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    use_key(monkeypatch, attentive_emulator, "test-key")
    attentive_emulator.client.add_key(NO_SUBS, scopes=["attributes:write"])
    attentive_emulator.client.add_key(NO_BETA, v2_access=False)
    db = Warehouse(path)
    create_customers(db, 20)
    return db


def use_key(monkeypatch: pytest.MonkeyPatch, emu: Emulator, key: str) -> None:
    connection = {"conn_type": "attentive", "host": emu.url, "password": key}
    monkeypatch.setenv("AIRFLOW_CONN_ATTENTIVE_DEFAULT", json.dumps(connection))


def attributes_sync(**kwargs: Any) -> AttentiveAttributesOperator:
    kwargs.setdefault("sql", SQL)
    op = operator("attributes", primary_key="customer_id", sync_id="bulk.operator", **kwargs)
    assert isinstance(op, AttentiveAttributesOperator)
    return op


def submissions(emu: Emulator) -> list[int]:
    """Users per bulk request that carried any (the access check of ``bulk=True`` carries none), in order of
    arrival: several are in flight at once, so that is not the batches' order."""
    sizes = [len(r["body"].get("users") or []) for r in emu.client.requests(endpoint="bulk")]
    return [n for n in sizes if n]


def bulk_users_sent(emu: Emulator) -> int:
    return sum(submissions(emu))


def state_statuses(db: Warehouse) -> dict[str, int]:
    return dict(db.statuses("bulk.operator"))


# ----------------------------------------------------------------------------------- bulk=True access ----


@pytest.mark.parametrize(
    "key, named",
    [(NO_SUBS, "subscriptions:write"), (NO_BETA, "beta")],
    ids=["no-subscriptions-scope", "no-v2-access"],
)
def test_bulk_true_with_a_key_that_cannot_use_bulk_fails_before_the_model_is_read(
    attentive_emulator: Emulator, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, key: str, named: str
) -> None:
    use_key(monkeypatch, attentive_emulator, key)
    # A model on a table that does not exist: had the warehouse been read, the error would be about the table.
    op = attributes_sync(sql="SELECT * FROM no_such_table", bulk=True)
    ti = TaskInstance()
    with pytest.raises(AirflowFailException) as info:
        op.execute(context(ti))
    message = str(info.value)
    assert "before reading the model" in message and named in message
    assert "bulk" in message and "no_such_table" not in message
    assert key not in message
    assert bulk_users_sent(attentive_emulator) == 0, "a bulk request carried users"
    assert request_count(attentive_emulator, "bulk") == 1  # the check itself, an empty submission
    assert request_count(attentive_emulator, "attributes") == 0
    assert attentive_emulator.client.jobs() == []
    assert ti.xcom == {}
    assert warehouse.query("SELECT name FROM sqlite_master WHERE name LIKE 'attentive%'") == []


def test_bulk_auto_with_a_key_lacking_the_scope_delivers_through_v1(
    attentive_emulator: Emulator, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_key(monkeypatch, attentive_emulator, NO_SUBS)
    ti = TaskInstance()
    summary = attributes_sync(bulk="auto", bulk_threshold=10).execute(context(ti))
    assert summary["succeeded"]["added"] == 20 and summary["bulk_jobs_submitted"] == 0
    fallback = ti.xcom["summary"]["bulk_fallback"]
    assert "403" in fallback and "v1" in fallback
    assert request_count(attentive_emulator, "attributes") == 20
    assert attentive_emulator.client.jobs() == []
    assert state_statuses(warehouse) == {"ok": 20}


def test_bulk_true_with_a_good_key_submits_jobs_and_waits_for_them(
    attentive_emulator: Emulator, warehouse: Warehouse
) -> None:
    ti = TaskInstance()
    summary = attributes_sync(bulk=True, bulk_batch_size=8, bulk_wait=30, bulk_poll_interval=0.1).execute(context(ti))
    assert summary["bulk_jobs_submitted"] == 3 == summary["bulk_jobs_completed"]  # 8 + 8 + 4
    assert summary["succeeded"]["added"] == 20 and summary["awaiting_results"] == 0
    assert summary["bulk_fallback"] is None
    assert request_count(attentive_emulator, "attributes") == 0
    assert sorted(submissions(attentive_emulator)) == [4, 8, 8]
    assert state_statuses(warehouse) == {"ok": 20}


# ------------------------------------------------------------------------------------------ parameters ----


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bulk": "yes"}, "bulk must be True, False or 'auto'"),
        ({"bulk": 1.0}, "bulk must be True, False or 'auto'"),
        ({"bulk_batch_size": 0}, "bulk_batch_size"),
        ({"bulk_batch_size": 257}, "bulk_batch_size"),
        ({"bulk_batch_size": True}, "bulk_batch_size"),
        ({"bulk_threshold": -1}, "bulk_threshold"),
        ({"bulk_wait": -1}, "bulk_wait"),
        ({"bulk_poll_interval": 0}, "bulk_poll_interval"),
    ],
)
def test_bulk_parameters_are_checked_when_the_operator_is_built(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        attributes_sync(**kwargs)


@pytest.mark.parametrize("size", [1, 256])
def test_bulk_batch_size_bounds_are_accepted(size: int) -> None:
    assert attributes_sync(bulk=True, bulk_batch_size=size).bulk_batch_size == size


# ------------------------------------------------------------------------------------------- deferral ----


def test_deferrable_defers_with_its_job_ids_and_execute_complete_reconciles_them(
    attentive_emulator: Emulator, warehouse: Warehouse
) -> None:
    client = attentive_emulator.client
    client.set_job_settings(hold=True)
    op = attributes_sync(bulk=True, bulk_batch_size=8, deferrable=True, bulk_wait=120, bulk_poll_interval=1)
    ti = TaskInstance()
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        op.execute(context(ti))
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    trigger = deferred.trigger
    assert isinstance(trigger, AttentiveBulkJobTrigger)
    jobs = [job["id"] for job in client.jobs()]
    assert len(jobs) == 3 and sorted(trigger.job_ids) == sorted(jobs)
    assert trigger.poll_interval == 1.0 and before + 120 <= trigger.deadline <= time.time() + 120
    assert trigger.attentive_conn_id == "attentive_default"
    _, kwargs = trigger.serialize()
    assert "test-key" not in json.dumps(kwargs)
    # The worker did not poll: the summary before deferring says the rows await their jobs.
    first = ti.xcom["summary"]
    assert first["bulk_jobs_submitted"] == 3 and first["awaiting_results"] == 20
    assert request_count(attentive_emulator, "bulk_job") == 0
    assert state_statuses(warehouse) == {"submitted": 20}

    release_and_finish(attentive_emulator)
    jobs_event = {job: {"id": job, "status": "COMPLETED", "finished": True} for job in jobs}
    summary = op.execute_complete(context(ti), {"status": "done", "jobs": jobs_event, "message": "3 bulk job(s)"})
    assert summary["reconciled"] == {"ok": 20, "rejected": 0, "failed": 0}
    assert summary["bulk_jobs_submitted"] == 0 and summary["bulk_jobs_pending"] == 0
    assert ti.xcom["summary"] == summary
    assert sorted(submissions(attentive_emulator)) == [4, 8, 8], "the resumed run submitted again"
    assert request_count(attentive_emulator, "bulk") == 4  # with the access check, before the first run
    assert state_statuses(warehouse) == {"ok": 20}
    assert len(client.attributes()) == 20


def test_a_resumed_run_after_a_timeout_leaves_unfinished_jobs_to_the_next_run(
    attentive_emulator: Emulator, warehouse: Warehouse
) -> None:
    client = attentive_emulator.client
    client.set_job_settings(hold=True)
    op = attributes_sync(bulk=True, deferrable=True, bulk_wait=5, bulk_poll_interval=1)
    ti = TaskInstance()
    with pytest.raises(TaskDeferred):
        op.execute(context(ti))
    (job,) = [j["id"] for j in client.jobs()]

    # The trigger gave up: the resumed run neither waits, nor resends, nor counts the rows as done.
    event = {"status": "timeout", "jobs": {job: {"id": job, "status": "IN_PROGRESS", "finished": False}}}
    resumed = op.execute_complete(context(ti), event)
    assert resumed["bulk_jobs_pending"] == 1 and resumed["awaiting_job"] == 20
    assert resumed["succeeded"]["added"] == 0 and submissions(attentive_emulator) == [20]
    assert state_statuses(warehouse) == {"submitted": 20}

    release_and_finish(attentive_emulator)
    # The next scheduled run reconciles the job, and has nothing of its own to submit, so it does not defer.
    later = attributes_sync(bulk=True, deferrable=True, bulk_wait=5, bulk_poll_interval=1).execute(context())
    assert later["reconciled"]["ok"] == 20 and later["bulk_jobs_submitted"] == 0
    assert submissions(attentive_emulator) == [20]
    assert state_statuses(warehouse) == {"ok": 20}
