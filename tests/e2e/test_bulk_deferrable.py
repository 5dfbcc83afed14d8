"""AttentiveAttributesOperator(bulk=True, deferrable=True) under real Airflow: it defers, resumes, every row ends ok.

Once under ``airflow dags test`` (which runs the trigger in-process), once under a real scheduler and
triggerer (LocalExecutor on a throwaway PostgreSQL metadata database), where the task is seen ``deferred``
while the emulator holds its jobs, and succeeds once they are released.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, EmulatorProcess, KeySpec
from tests.helpers.airflow_cli import (
    airflow,
    airflow_env,
    airflow_services,
    attentive_conn,
    metadata,
    sqlite_conn,
    wait_for,
)
from tests.helpers.warehouse import Warehouse, create_customers

pytestmark = pytest.mark.slow

KEY = "sk_bulk_deferrable_key_8086"
DAG_ID = "attentive_bulk_deferrable"
TASK_ID = "sync_loyalty_bulk"
SYNC_ID = f"{DAG_ID}.{TASK_ID}"
ROWS = 40
BATCH = 16  # three jobs: 16 + 16 + 8

DAG_FILE = textwrap.dedent(
    f'''
    """Custom attributes through v2 bulk jobs, waiting for them in the triggerer."""

    import datetime as dt

    from airflow.sdk import DAG

    from airflow_provider_attentive.operators.attributes import AttentiveAttributesOperator

    with DAG("{DAG_ID}", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)):
        AttentiveAttributesOperator(
            task_id="{TASK_ID}",
            sql="SELECT customer_id, phone, email, loyalty_tier, ltv FROM customers",
            sql_conn_id="warehouse",
            primary_key="customer_id",
            bulk=True,
            bulk_batch_size={BATCH},
            deferrable=True,
            bulk_wait=120,
            bulk_poll_interval=1,
        )
    '''
)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[EmulatorProcess, dict[str, str], Warehouse]]:
    """The emulator in its own process, a warehouse of ROWS customers, the DAG, and Airflow's environment."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "bulk_deferrable.py").write_text(DAG_FILE)
    warehouse = Warehouse(tmp_path / "warehouse.db")
    create_customers(warehouse, ROWS)
    with Emulator.spawn(keys={KEY: KeySpec(scopes=ALL_SCOPES)}) as emu:
        connections = {"attentive_default": attentive_conn(emu.url, KEY), "warehouse": sqlite_conn(warehouse.path)}
        yield emu, airflow_env(tmp_path / "airflow", dags, connections), warehouse


def submitted_users(emu: EmulatorProcess) -> list[int]:
    """Users per bulk request that carried any (the access check of bulk=True carries none)."""
    return sorted(n for r in emu.client.requests(endpoint="bulk") if (n := len(r["body"].get("users") or [])))


def job_polls(emu: EmulatorProcess) -> int:
    return sum(1 for r in emu.client.requests() if r["path"].startswith("/v2/bulk/job/"))


def assert_every_row_ok(emu: EmulatorProcess, warehouse: Warehouse) -> None:
    assert dict(warehouse.statuses(SYNC_ID)) == {"ok": ROWS}
    assert len(emu.client.attributes()) == ROWS
    assert submitted_users(emu) == [BATCH - 8, BATCH, BATCH], "a row was submitted twice"
    assert {job["status"] for job in emu.client.jobs()} == {"COMPLETED"}
    open_jobs = warehouse.query("SELECT COUNT(*) FROM attentive_sync_jobs WHERE status != 'COMPLETED'")
    assert open_jobs == [(0,)]


def test_dags_test_defers_resumes_and_every_row_ends_ok(
    stack: tuple[EmulatorProcess, dict[str, str], Warehouse],
) -> None:
    emu, env, warehouse = stack
    emu.client.set_job_settings(pending_s=0.2, delay_s=2.0)  # long enough for the trigger to poll a few times
    airflow(env, "db", "migrate")
    output = airflow(env, "dags", "test", DAG_ID)
    assert "deferring: waiting up to 120 s for 3 bulk job(s) in the triggerer" in output, output[-4000:]
    assert output.count("Attentive sync summary") == 2, "the task did not run again after its deferral"
    assert job_polls(emu) >= 3  # the trigger waited, polling, for its three jobs
    assert_every_row_ok(emu, warehouse)
    assert KEY not in output


# ------------------------------------------------------------------------------- scheduler + triggerer ----


def task_states(db: dict[str, Any]) -> list[str]:
    """The states of the DAG's task instances."""
    rows = metadata(db, "SELECT state FROM task_instance WHERE dag_id = %s AND task_id = %s", DAG_ID, TASK_ID)
    return [str(row[0]) for row in rows]


@pytest.mark.postgres
def test_scheduler_defers_the_task_and_the_triggerer_resumes_it(
    stack: tuple[EmulatorProcess, dict[str, str], Warehouse], pg_database: dict[str, Any], tmp_path: Path
) -> None:
    emu, env, warehouse = stack
    emu.client.set_job_settings(hold=True)  # the jobs wait for release_jobs: the task stays deferred meanwhile
    db = pg_database
    logs = tmp_path / "logs"
    with airflow_services(env, db, logs, triggerer=True):
        parsed = "SELECT 1 FROM serialized_dag WHERE dag_id = %s"
        wait_for(lambda: metadata(db, parsed, DAG_ID), 120, "the DAG to be parsed", every=0.5)
        airflow(env, "dags", "trigger", DAG_ID)

        def deferred() -> bool:
            states = task_states(db)
            assert not {"failed", "upstream_failed"} & set(states), f"the task failed: {states}"
            return states == ["deferred"]

        wait_for(deferred, 120, "the task to defer")
        assert sorted(job["records"] for job in emu.client.jobs()) == [BATCH - 8, BATCH, BATCH]
        wait_for(lambda: job_polls(emu) >= 3, 60, "the triggerer to poll the held jobs")
        # Released before the deferring worker process has exited, the resumed try can start while the executor
        # still holds the first one's exit, which it then reports as the resumed try's end (Airflow marks the
        # task failed). A job that takes Attentive hours never races so; the test waits for that exit instead.
        scheduler_log = logs / "scheduler.log"
        wait_for(lambda: "final_state=deferred" in scheduler_log.read_text(), 60, "the deferring worker to exit")
        assert dict(warehouse.statuses(SYNC_ID)) == {"submitted": ROWS}, "rows were counted before their jobs ended"

        emu.client.release_jobs()
        wait_for(lambda: task_states(db) == ["success"], 120, "the resumed task to succeed")
    assert_every_row_ok(emu, warehouse)
    for path in [*logs.iterdir(), *(tmp_path / "airflow" / "logs").rglob("*")]:
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), f"the API key appears in {path.name}"
