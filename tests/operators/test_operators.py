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
from airflow_provider_attentive.operators.attributes import AttentiveAttributesOperator
from airflow_provider_attentive.operators.events import AttentiveEventsOperator
from airflow_provider_attentive.operators.subscriptions import AttentiveSubscriptionsOperator
from tests.sync.conftest import create_customers, phone, request_count


class _TaskInstance:
    """Records XCom pushes; the only part of a TaskInstance the operators use outside a DAG run."""

    try_number = 1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = json.loads(json.dumps(value))  # XCom values must be JSON-serialisable


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
    conn = sqlite3.connect(warehouse)
    create_customers(conn, 20)
    conn.close()
    return tmp_path


def context(ti: _TaskInstance | None = None) -> dict[str, Any]:
    return {"run_id": "manual__test", "ti": ti}


def test_attributes_operator_syncs_and_pushes_a_json_summary(attentive_emulator: Emulator, connections: Path) -> None:
    op = AttentiveAttributesOperator(
        task_id="sync_loyalty",
        sql="SELECT customer_id, phone, email, loyalty_tier, ltv FROM customers",
        sql_conn_id="warehouse",
        primary_key="customer_id",
    )
    ti = _TaskInstance()
    summary = op.execute(context(ti))
    assert summary["succeeded"]["added"] == 20 and summary["sync_id"] == op.sync_id
    assert ti.pushed["summary"] == summary
    assert summary["run_id"] == "manual__test#1"
    again = op.execute(context())
    assert again["unchanged"] == 20 and request_count(attentive_emulator, "attributes") == 20


def test_state_in_a_different_connection(attentive_emulator: Emulator, connections: Path) -> None:
    op = AttentiveAttributesOperator(
        task_id="t",
        sql="SELECT customer_id, phone, loyalty_tier FROM customers",
        sql_conn_id="warehouse",
        state_conn_id="state",
        primary_key="customer_id",
    )
    op.execute(context())
    state = sqlite3.connect(connections / "state.db")
    assert state.execute("SELECT COUNT(*) FROM attentive_sync_state").fetchone() == (20,)
    warehouse = sqlite3.connect(connections / "warehouse.db")
    assert warehouse.execute("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'attentive%'").fetchone() == (0,)


def test_configuration_problems_fail_without_retry_and_send_nothing(
    attentive_emulator: Emulator, connections: Path
) -> None:
    bad_mapping = AttentiveAttributesOperator(
        task_id="t",
        sql="SELECT * FROM customers",
        sql_conn_id="warehouse",
        primary_key="customer_id",
        mapping={"phone": "phone", "nope": "x"},
    )
    with pytest.raises(AirflowFailException, match="'nope'"):
        bad_mapping.execute(context())
    not_sql = AttentiveAttributesOperator(task_id="t2", sql="SELECT 1", sql_conn_id="not_sql", primary_key="id")
    with pytest.raises(AirflowFailException, match="not a SQL"):
        not_sql.execute(context())
    no_source = AttentiveSubscriptionsOperator(
        task_id="t3", sql="SELECT phone FROM customers", sql_conn_id="warehouse", primary_key="phone", mode="add"
    )
    with pytest.raises(AirflowFailException, match="sign_up_source_id"):
        no_source.execute(context())
    with pytest.raises(ValueError, match="mode"):
        AttentiveSubscriptionsOperator(task_id="t4", sql="x", sql_conn_id="w", primary_key="p", mode="sync")
    with pytest.raises(TypeError, match="mode"):  # no default: subscribing or unsubscribing is always explicit
        AttentiveSubscriptionsOperator(task_id="t5", sql="x", sql_conn_id="w", primary_key="p")  # type: ignore[call-arg]
    assert sum(e["requests"] for e in attentive_emulator.client.stats()["endpoints"].values()) == 0


def test_too_many_failures_fails_the_task_but_pushes_the_summary(
    attentive_emulator: Emulator, connections: Path
) -> None:
    conn = sqlite3.connect(connections / "warehouse.db")
    conn.execute("UPDATE customers SET phone = 'nope' WHERE customer_id < 5")
    conn.commit()
    op = AttentiveAttributesOperator(
        task_id="t", sql="SELECT * FROM customers", sql_conn_id="warehouse", primary_key="customer_id"
    )
    ti = _TaskInstance()
    with pytest.raises(AirflowException, match="5 of 20 rows invalid"):
        op.execute(context(ti))
    assert ti.pushed["summary"]["invalid"] == 5 and ti.pushed["summary"]["succeeded"]["added"] == 15


def test_events_and_subscriptions_operators(attentive_emulator: Emulator, connections: Path) -> None:
    events = AttentiveEventsOperator(
        task_id="ev",
        sql="SELECT customer_id, phone, loyalty_tier FROM customers WHERE customer_id < 4",
        sql_conn_id="warehouse",
        primary_key="customer_id",
        event_type="Tier Computed",
        mapping={"phone": "phone", "loyalty_tier": "properties.tier"},
    )
    assert events.execute(context())["succeeded"]["added"] == 4
    assert {e["body"]["type"] for e in attentive_emulator.client.events()} == {"Tier Computed"}
    subs = AttentiveSubscriptionsOperator(
        task_id="vip",
        sql="SELECT phone FROM customers WHERE customer_id < 3",
        sql_conn_id="warehouse",
        primary_key="phone",
        mode="mirror",
        sign_up_source_id="64140",
    )
    assert subs.execute(context())["succeeded"]["added"] == 3
    assert sorted(attentive_emulator.client.subscriptions()) == [phone(0), phone(1), phone(2)]


def test_templated_fields_and_asset(connections: Path) -> None:
    op = AttentiveEventsOperator(
        task_id="ev",
        sql="q.sql",
        sql_conn_id="warehouse",
        primary_key="id",
        event_type="{{ params.kind }}",
        emit_asset=True,
    )
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
    op = AttentiveAttributesOperator(
        task_id="t", sql="SELECT * FROM customers", sql_conn_id="warehouse", primary_key="customer_id"
    )
    with pytest.raises(AirflowFailException, match="http://") as info:
        op.execute(context())
    assert "k-123456" not in str(info.value)
    monkeypatch.setenv(
        "AIRFLOW_CONN_ATTENTIVE_DEFAULT", json.dumps({"conn_type": "attentive", "host": attentive_emulator.url})
    )
    with pytest.raises(AirflowFailException, match="no API key"):
        op.execute(context())


def test_a_mapped_sync_needs_its_own_sync_id(attentive_emulator: Emulator, connections: Path) -> None:
    def mapped(**kwargs: Any) -> AttentiveSubscriptionsOperator:
        return AttentiveSubscriptionsOperator(
            task_id="lists",
            sql="SELECT phone FROM customers",
            sql_conn_id="warehouse",
            mode="mirror",
            primary_key="phone",
            sign_up_source_id="64140",
            **kwargs,
        )

    ti = _TaskInstance()
    ti.map_index = 0  # type: ignore[attr-defined]
    with pytest.raises(AirflowFailException, match="mapped task: give each mapped instance its own sync_id"):
        mapped().execute(context(ti))
    assert request_count(attentive_emulator, "subscribe") == 0
    summary = mapped(sync_id="list_a").execute(context(ti))
    assert summary["sync_id"] == "list_a" and summary["succeeded"]["added"] == 20


def test_an_empty_model_on_an_empty_data_interval_is_pointed_out(
    attentive_emulator: Emulator, connections: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    op = AttentiveEventsOperator(
        task_id="ev",
        sql="SELECT customer_id, phone FROM customers WHERE customer_id < 0",
        sql_conn_id="warehouse",
        primary_key="customer_id",
        event_type="Order Shipped",
    )
    midnight = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc)
    capfd.readouterr()
    op.execute({**context(), "data_interval_start": midnight, "data_interval_end": midnight})
    assert "CronDataIntervalTimetable" in "".join(capfd.readouterr())  # the task log (structlog, on stdout)
    op.execute({**context(), "data_interval_start": midnight - dt.timedelta(days=1), "data_interval_end": midnight})
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
    ti = _TaskInstance()
    ti.map_index = 0  # type: ignore[attr-defined]
    instance = shared.unmap({"sql": "SELECT phone FROM customers WHERE customer_id < 10"})
    with pytest.raises(AirflowFailException, match="its own sync_id"):
        instance.execute(context(ti))
    assert request_count(attentive_emulator, "subscribe") == 0
    mine = own.unmap({"sql": "SELECT phone FROM customers WHERE customer_id < 10", "sync_id": "list_a"})
    assert mine.execute(context(ti))["succeeded"]["added"] == 10
    assert dag.task_dict["own"] is own
