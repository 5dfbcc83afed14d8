"""The operators as Airflow glue: env-var connections, any SQL connection, errors mapped to task failures."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.operators.base import AttentiveSyncOperator
from airflow_provider_attentive.operators.subscriptions import AttentiveSubscriptionsOperator
from tests.helpers.operators import TaskInstance, context, operator
from tests.helpers.phones import phone
from tests.helpers.records import request_count
from tests.helpers.warehouse import Warehouse, create_customers


@pytest.fixture
def connections(attentive_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    warehouse = tmp_path / "warehouse.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_ATTENTIVE_DEFAULT",
        json.dumps({"conn_type": "attentive", "host": attentive_emulator.url, "password": "test-key"}),
    )
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(warehouse)}))
    monkeypatch.setenv("AIRFLOW_CONN_STATE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "state.db")}))
    monkeypatch.setenv("AIRFLOW_CONN_NOT_SQL", json.dumps({"conn_type": "attentive", "host": "https://example.com"}))
    create_customers(Warehouse(warehouse), 20)
    return tmp_path


def every_customer(**kwargs: Any) -> AttentiveSyncOperator:
    """An attributes sync of the whole ``customers`` table."""
    return operator("attributes", sql="SELECT * FROM customers", primary_key="customer_id", **kwargs)


def vip_list(**kwargs: Any) -> AttentiveSyncOperator:
    """A subscriptions mirror of every customer's phone (``sql`` narrows it)."""
    kwargs.setdefault("sql", "SELECT phone FROM customers")
    return operator("subscriptions", primary_key="phone", mode="mirror", sign_up_source_id="64140", **kwargs)


def test_attributes_operator_syncs_and_pushes_a_json_summary(attentive_emulator: Emulator, connections: Path) -> None:
    sql = "SELECT customer_id, phone, email, loyalty_tier, ltv FROM customers"
    op = operator("attributes", task_id="sync_loyalty", sql=sql, primary_key="customer_id")
    ti = TaskInstance()
    summary = op.execute(context(ti))
    assert summary["succeeded"]["added"] == 20 and summary["sync_id"] == op.sync_id
    assert ti.xcom["summary"] == summary
    assert summary["run_id"] == "manual__test#1"
    again = op.execute(context())
    assert again["unchanged"] == 20 and request_count(attentive_emulator, "attributes") == 20


def test_state_in_a_different_connection(attentive_emulator: Emulator, connections: Path) -> None:
    sql = "SELECT customer_id, phone, loyalty_tier FROM customers"
    op = operator("attributes", sql=sql, state_conn_id="state", primary_key="customer_id")
    op.execute(context())
    state = sqlite3.connect(connections / "state.db")
    assert state.execute("SELECT COUNT(*) FROM attentive_sync_state").fetchone() == (20,)
    warehouse = sqlite3.connect(connections / "warehouse.db")
    assert warehouse.execute("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'attentive%'").fetchone() == (0,)


def test_configuration_problems_fail_without_retry_and_send_nothing(
    attentive_emulator: Emulator, connections: Path
) -> None:
    bad_mapping = every_customer(mapping={"phone": "phone", "nope": "x"})
    with pytest.raises(AirflowFailException, match="'nope'"):
        bad_mapping.execute(context())
    not_sql = operator("attributes", sql="SELECT 1", sql_conn_id="not_sql", primary_key="id")
    with pytest.raises(AirflowFailException, match="not a SQL"):
        not_sql.execute(context())
    no_source = operator("subscriptions", sql="SELECT phone FROM customers", primary_key="phone", mode="add")
    with pytest.raises(AirflowFailException, match="sign_up_source_id"):
        no_source.execute(context())
    with pytest.raises(ValueError, match="mode"):
        AttentiveSubscriptionsOperator(task_id="t4", sql="x", sql_conn_id="w", primary_key="p", mode="sync")
    with pytest.raises(TypeError, match="mode"):  # no default: subscribing or unsubscribing is always explicit
        AttentiveSubscriptionsOperator(task_id="t5", sql="x", sql_conn_id="w", primary_key="p")  # type: ignore[call-arg]
    # The mapping is checked against the model's columns, after the key check (GET /v1/me): one request, no write.
    endpoints = attentive_emulator.client.stats()["endpoints"]
    assert endpoints["me"]["requests"] == 1
    assert sum(e["requests"] for name, e in endpoints.items() if name != "me") == 0


def test_too_many_failures_fails_the_task_but_pushes_the_summary(
    attentive_emulator: Emulator, connections: Path
) -> None:
    conn = sqlite3.connect(connections / "warehouse.db")
    conn.execute("UPDATE customers SET phone = 'nope' WHERE customer_id < 5")
    conn.commit()
    op = every_customer()
    ti = TaskInstance()
    with pytest.raises(AirflowException, match="5 of 20 rows invalid"):
        op.execute(context(ti))
    assert ti.xcom["summary"]["invalid"] == 5 and ti.xcom["summary"]["succeeded"]["added"] == 15


def test_events_and_subscriptions_operators(attentive_emulator: Emulator, connections: Path) -> None:
    events = operator(
        "events",
        sql="SELECT customer_id, phone, loyalty_tier FROM customers WHERE customer_id < 4",
        primary_key="customer_id",
        event_type="Tier Computed",
        mapping={"phone": "phone", "loyalty_tier": "properties.tier"},
    )
    assert events.execute(context())["succeeded"]["added"] == 4
    assert {e["body"]["type"] for e in attentive_emulator.client.events()} == {"Tier Computed"}
    subs = vip_list(task_id="vip", sql="SELECT phone FROM customers WHERE customer_id < 3")
    assert subs.execute(context())["succeeded"]["added"] == 3
    assert sorted(attentive_emulator.client.subscriptions()) == [phone(0), phone(1), phone(2)]


def test_templated_fields_and_asset(connections: Path) -> None:
    op = operator("events", sql="q.sql", primary_key="id", event_type="{{ params.kind }}", emit_asset=True)
    assert {"sql", "parameters", "sync_id", "mapping", "event_type"} <= set(op.template_fields)
    assert ".sql" in op.template_ext
    assert op.asset.uri == f"attentive://events/{op.sync_id}"
    assert op.asset in op.outlets


def test_a_broken_attentive_connection_fails_before_reading_anything(
    attentive_emulator: Emulator, connections: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_ATTENTIVE_DEFAULT",
        json.dumps({"conn_type": "attentive", "host": "http://api.example.com", "password": "k-123456"}),
    )
    op = every_customer()
    with pytest.raises(AirflowFailException, match="http://") as info:
        op.execute(context())
    assert "k-123456" not in str(info.value)
    monkeypatch.setenv(
        "AIRFLOW_CONN_ATTENTIVE_DEFAULT", json.dumps({"conn_type": "attentive", "host": attentive_emulator.url})
    )
    with pytest.raises(AirflowFailException, match="no API key"):
        op.execute(context())


def test_a_mapped_sync_needs_its_own_sync_id(attentive_emulator: Emulator, connections: Path) -> None:
    ti = TaskInstance(map_index=0)
    with pytest.raises(AirflowFailException, match="mapped task: give each mapped instance its own sync_id"):
        vip_list(task_id="lists").execute(context(ti))
    assert request_count(attentive_emulator, "subscribe") == 0
    summary = vip_list(task_id="lists", sync_id="list_a").execute(context(ti))
    assert summary["sync_id"] == "list_a" and summary["succeeded"]["added"] == 20


def test_an_empty_model_on_an_empty_data_interval_is_pointed_out(
    attentive_emulator: Emulator, connections: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    sql = "SELECT customer_id, phone FROM customers WHERE customer_id < 0"
    op = operator("events", sql=sql, primary_key="customer_id", event_type="Order Shipped")
    midnight = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc)
    capfd.readouterr()
    op.execute(context(data_interval_start=midnight, data_interval_end=midnight))
    assert "CronDataIntervalTimetable" in "".join(capfd.readouterr())  # the task log (structlog, on stdout)
    op.execute(context(data_interval_start=midnight - dt.timedelta(days=1), data_interval_end=midnight))
    assert "CronDataIntervalTimetable" not in "".join(capfd.readouterr())


def test_a_sync_id_given_to_partial_is_shared_by_every_instance_and_refused(
    attentive_emulator: Emulator, connections: Path
) -> None:
    from airflow.sdk import DAG

    common = dict(sql_conn_id="warehouse", mode="mirror", primary_key="phone", sign_up_source_id="64140")
    with DAG("lists", schedule=None) as dag:
        shared = AttentiveSubscriptionsOperator.partial(task_id="shared", sync_id="vip_lists", **common).expand(
            sql=["SELECT phone FROM customers WHERE customer_id < 10", "SELECT phone FROM customers"]
        )
        own = AttentiveSubscriptionsOperator.partial(task_id="own", **common).expand_kwargs(
            [{"sql": "SELECT phone FROM customers WHERE customer_id < 10", "sync_id": "list_a"}]
        )
    ti = TaskInstance(map_index=0)
    instance = shared.unmap({"sql": "SELECT phone FROM customers WHERE customer_id < 10"})
    with pytest.raises(AirflowFailException, match="its own sync_id"):
        instance.execute(context(ti))
    assert request_count(attentive_emulator, "subscribe") == 0
    mine = own.unmap({"sql": "SELECT phone FROM customers WHERE customer_id < 10", "sync_id": "list_a"})
    assert mine.execute(context(ti))["succeeded"]["added"] == 10
    assert dag.task_dict["own"] is own
