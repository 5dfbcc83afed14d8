"""The example DAGs under real Airflow (`airflow dags test` in a subprocess) against the emulator.

Every run also emits OpenLineage events to a file (the provider's file transport), so the lineage tests read
the same runs instead of paying for Airflow runs of their own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, EmulatorProcess, KeySpec

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
EXAMPLE_DAGS = (
    "attentive_loyalty_attributes",
    "attentive_order_shipped_events",
    "attentive_vip_sms_list",
    "attentive_vip_gold_segment",
)
GOLD_CUSTOMERS = 67  # scripts/demo.py's valid gold-tier customers (its garbage phone is gold too, and invalid)
pytestmark = pytest.mark.slow


def _demo_module() -> Any:
    spec = importlib.util.spec_from_file_location("attentive_demo", ROOT / "scripts" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProcess, dict[str, str], Path]]:
    demo = _demo_module()
    home = tmp_path_factory.mktemp("e2e")
    warehouse = home / "warehouse.db"
    demo.build_warehouse(warehouse)
    with Emulator.spawn(keys={"e2e-key": KeySpec(scopes=ALL_SCOPES, company_name="E2E Co")}) as emu:
        env = dict(os.environ)
        env.update(
            AIRFLOW_HOME=str(home / "airflow"),
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__TEST_CONNECTION="Enabled",
            AIRFLOW_CONN_ATTENTIVE_DEFAULT=json.dumps(
                {"conn_type": "attentive", "host": emu.url, "password": "e2e-key"}
            ),
            AIRFLOW_CONN_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
            AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
                {"type": "file", "log_file_path": str(home / "openlineage.jsonl"), "append": True}
            ),
            AIRFLOW__OPENLINEAGE__NAMESPACE="e2e",
        )
        airflow(env, "db", "migrate")
        yield emu, env, warehouse


def airflow(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"airflow {' '.join(args)} failed:\n{output[-4000:]}"
    return output


@pytest.fixture(scope="module")
def example_runs(stack: tuple[EmulatorProcess, dict[str, str], Path]) -> dict[str, str]:
    """Each example DAG run once, for today: ``{dag_id: airflow's output}``."""
    _, env, _ = stack
    date = _demo_module().TODAY.strftime("%Y-%m-%d")
    return {dag_id: airflow(env, "dags", "test", dag_id, date) for dag_id in EXAMPLE_DAGS}


def lineage_events(env: dict[str, str]) -> list[dict[str, Any]]:
    """The OpenLineage events emitted so far, oldest first."""
    path = Path(json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])["log_file_path"])
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_example_dags_parse_without_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors
    assert set(EXAMPLE_DAGS) <= set(bag.dag_ids)


def test_connection_test_command(stack: tuple[EmulatorProcess, dict[str, str], Path]) -> None:
    emu, env, _ = stack
    before = emu.client.stats()["endpoints"]["me"]["requests"]
    out = airflow(env, "connections", "test", "attentive_default")
    assert "Connection success!" in out and "e2e-key" not in out
    assert emu.client.stats()["endpoints"]["me"]["requests"] == before + 1
    wrong = dict(env)
    wrong["AIRFLOW_CONN_ATTENTIVE_DEFAULT"] = json.dumps(
        {"conn_type": "attentive", "host": emu.url, "password": "wrong-secret-key"}
    )
    proc = subprocess.run(
        [AIRFLOW, "connections", "test", "attentive_default"], env=wrong, capture_output=True, text=True
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "401" in output and "wrong-secret-key" not in output


def test_example_dags_run_and_rerun_sends_nothing(
    stack: tuple[EmulatorProcess, dict[str, str], Path], example_runs: dict[str, str]
) -> None:
    emu, env, _ = stack
    date = _demo_module().TODAY.strftime("%Y-%m-%d")
    for out in example_runs.values():
        assert "Attentive sync summary" in out and "e2e-key" not in out
    stats = emu.client.stats()
    assert len(emu.client.attributes()) == 200  # 200 valid customers; the garbage phone is reported, not sent
    assert stats["events_stored"] == 30
    subscribe = stats["endpoints"]["subscribe"]
    # A 429 is not a subscribe (nothing was applied; the transport sends it again): counted apart.
    assert subscribe["requests"] - subscribe["rate_limited"] == 40 and stats["repeat_subscribes"] == 0
    # The segment holds the gold customers, from one member request, and texted nobody: every message went to a
    # new subscriber of the SMS list.
    segment = emu.client.segments()["vip_gold"]
    assert segment["name"] == "VIP Gold (warehouse)" and len(segment["members"]) == GOLD_CUSTOMERS
    assert stats["endpoints"]["segment_members_add"]["requests"] == 1
    assert len(emu.client.messages()) == subscribe["requests"] - subscribe["rate_limited"]
    # The same interval again: every order was delivered, so nothing is sent.
    out = airflow(env, "dags", "test", "attentive_order_shipped_events", date)
    assert emu.client.stats()["endpoints"]["events"]["requests"] == 30
    assert re.search(r"\| unchanged +\| 30 ", out), out[-3000:]
    # The segment again: nothing changed, so the segment is read and no member request goes out.
    out = airflow(env, "dags", "test", "attentive_vip_gold_segment", date)
    assert re.search(rf"\| unchanged +\| {GOLD_CUSTOMERS} ", out), out[-3000:]
    assert re.search(r"\| segment +\| unchanged ", out), out[-3000:]
    after = emu.client.stats()["endpoints"]
    assert after["segment_members_add"]["requests"] == 1 and after["segment_members_remove"]["requests"] == 0
    assert len(emu.client.segments()["vip_gold"]["members"]) == GOLD_CUSTOMERS
    assert "e2e-key" not in out


def test_example_dags_report_lineage(
    stack: tuple[EmulatorProcess, dict[str, str], Path], example_runs: dict[str, str]
) -> None:
    """START and COMPLETE per sync task: the warehouse table and its columns in, the Attentive destination out."""
    emu, env, warehouse = stack
    events = lineage_events(env)
    api = f"attentive://{urllib.parse.urlsplit(emu.url).netloc}"
    expected = {  # job: (table read, columns read, destination, rows read, rows sent)
        "attentive_loyalty_attributes.sync_loyalty": (
            "main.customers",
            {"customer_id", "phone", "email", "loyalty_tier", "ltv"},
            "attributes",
            201,
            200,
        ),
        "attentive_order_shipped_events.order_shipped_events": (
            "main.shipments",
            {"order_id", "phone", "email", "shipped_at", "carrier", "tracking_url"},
            "events/Order Shipped",
            30,
            30,
        ),
        "attentive_vip_sms_list.vip_sms_list": (
            "main.vip_members",
            {"phone", "email", "first_name"},
            "subscriptions/vip_sms_list",
            40,
            40,
        ),
        "attentive_vip_gold_segment.vip_gold_segment": (
            "main.customers",
            {"customer_id", "phone", "email"},  # the columns the model selects (loyalty_tier only filters)
            "segments/vip_gold",
            GOLD_CUSTOMERS + 1,
            GOLD_CUSTOMERS,
        ),
    }
    for job, (table, columns, destination, rows_read, rows_sent) in expected.items():
        runs = [e for e in events if e["job"]["name"] == job]
        assert {"START", "COMPLETE"} <= {e["eventType"] for e in runs}, job
        assert all(e["job"]["namespace"] == "e2e" for e in runs)
        start = next(e for e in runs if e["eventType"] == "START")
        complete = next(e for e in runs if e["eventType"] == "COMPLETE")  # the first run, not a rerun
        for event in (start, complete):
            (read,) = event["inputs"]
            assert (read["namespace"], read["name"]) == (f"sqlite://{warehouse}", table)
            assert {f["name"] for f in read["facets"]["schema"]["fields"]} == columns
            (written,) = event["outputs"]
            assert (written["namespace"], written["name"]) == (api, destination)
        assert "outputStatistics" not in start["outputs"][0].get("outputFacets", {})
        assert complete["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == rows_sent
        counts = complete["run"]["facets"]["attentiveSync"]
        assert (counts["rowsRead"], counts["sent"], counts["inDoubt"]) == (rows_read, rows_sent, 0), job
        assert "sql" in complete["job"]["facets"]
    attributes = next(e for e in events if e["job"]["name"].endswith("sync_loyalty") and e["eventType"] == "COMPLETE")
    assert attributes["run"]["facets"]["attentiveSync"]["invalid"] == 1  # the garbage phone
    lineage = attributes["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert lineage["lifetime_value"]["inputFields"] == [
        {"namespace": f"sqlite://{warehouse}", "name": "main.customers", "field": "ltv", "transformations": []}
    ]
    raw = Path(json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])["log_file_path"]).read_text()
    assert "e2e-key" not in raw


def test_a_sync_stopped_by_a_guard_reports_a_failed_run(
    stack: tuple[EmulatorProcess, dict[str, str], Path], example_runs: dict[str, str], tmp_path: Path
) -> None:
    """The VIP mirror against a copy of the warehouse whose audience is empty: the guard fails the task."""
    emu, env, warehouse = stack
    emptied = tmp_path / "emptied.db"
    shutil.copy(warehouse, emptied)  # the state tables come along: the mirror has members to lose
    with sqlite3.connect(emptied) as conn:
        conn.execute("DELETE FROM vip_members")
    conn.close()
    failing = dict(env, AIRFLOW_CONN_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(emptied)}))
    seen = len(lineage_events(env))
    before = emu.client.stats()["endpoints"]["unsubscribe"]["requests"]
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", "attentive_vip_sms_list", _demo_module().TODAY.strftime("%Y-%m-%d")],
        env=failing,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert "the model returned no rows" in output, output[-3000:]
    assert emu.client.stats()["endpoints"]["unsubscribe"]["requests"] == before  # nothing was sent
    (fail,) = [
        e
        for e in lineage_events(env)[seen:]
        if e["eventType"] == "FAIL" and e["job"]["name"] == "attentive_vip_sms_list.vip_sms_list"
    ]
    facets = fail["run"]["facets"]
    assert "the model returned no rows" in facets["errorMessage"]["message"]
    assert facets["attentiveSync"]["sent"] == 0
    (written,) = fail["outputs"]
    assert written["name"] == "subscriptions/vip_sms_list"
    assert written["outputFacets"]["outputStatistics"]["rowCount"] == 0
