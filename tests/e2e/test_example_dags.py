"""The example DAGs under real Airflow (`airflow dags test` in a subprocess) against the emulator."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, EmulatorProcess, KeySpec

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
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
        )
        airflow(env, "db", "migrate")
        yield emu, env, warehouse


def airflow(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"airflow {' '.join(args)} failed:\n{output[-4000:]}"
    return output


def test_example_dags_parse_without_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors
    assert {"attentive_loyalty_attributes", "attentive_order_shipped_events", "attentive_vip_sms_list"} <= set(
        bag.dag_ids
    )


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


def test_example_dags_run_and_rerun_sends_nothing(stack: tuple[EmulatorProcess, dict[str, str], Path]) -> None:
    emu, env, _ = stack
    demo = _demo_module()
    date = demo.TODAY.strftime("%Y-%m-%d")
    for dag_id in ("attentive_loyalty_attributes", "attentive_order_shipped_events", "attentive_vip_sms_list"):
        out = airflow(env, "dags", "test", dag_id, date)
        assert "Attentive sync summary" in out and "e2e-key" not in out
    stats = emu.client.stats()
    assert len(emu.client.attributes()) == 200  # 200 valid customers; the garbage phone is reported, not sent
    assert stats["events_stored"] == 30
    assert stats["endpoints"]["subscribe"]["requests"] == 40 and stats["repeat_subscribes"] == 0
    # The same interval again: every order was delivered, so nothing is sent.
    out = airflow(env, "dags", "test", "attentive_order_shipped_events", date)
    assert emu.client.stats()["endpoints"]["events"]["requests"] == 30
    assert re.search(r"\| unchanged +\| 30 ", out), out[-3000:]
