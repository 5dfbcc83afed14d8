"""`airflow backfill create` on the events example DAG, executed by a real scheduler (LocalExecutor).

Starts api-server, dag-processor and scheduler against a throwaway PostgreSQL metadata database, backfills
three daily intervals, and checks that each run's templated interval selected its own slice and that
re-running the same intervals sends nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, KeySpec
from tests.helpers.postgres import pg_connect

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "attentive_order_shipped_events"
pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _warehouse(path: Path, first_day: dt.datetime) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE shipments (order_id TEXT, phone TEXT, email TEXT, shipped_at TEXT, carrier TEXT, tracking_url TEXT)"
    )
    rows = []
    for i in range(5 * 12):  # every two hours for five days
        at = first_day + dt.timedelta(hours=2 * i)
        rows.append(
            (f"o-{i}", f"+1415{2000000 + i:07d}", None, at.strftime("%Y-%m-%d %H:%M:%S"), "ups", f"https://t/{i}")
        )
    conn.executemany("INSERT INTO shipments VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


@pytest.fixture
def airflow_stack(
    pg_database: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[dict[str, str], Any, dt.datetime, dict[str, Any]]]:
    first_day = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=6)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    _warehouse(tmp_path / "warehouse.db", first_day)
    api_port = _free_port()
    db = pg_database
    with Emulator.spawn(keys={"bf-key": KeySpec(scopes=ALL_SCOPES)}) as emu:
        env = dict(os.environ)
        env.update(
            AIRFLOW_HOME=str(tmp_path / "airflow"),
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            # The scheduler starts no run of a paused DAG, backfills included. Unpaused, it also schedules the
            # latest interval (yesterday), which has no shipments in this warehouse.
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=(
                f"postgresql+psycopg2://{db['user']}@{db['host']}:{db['port']}/{db['dbname']}"
            ),
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
            AIRFLOW__API_AUTH__JWT_SECRET="backfill-test-secret-not-for-production",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
            AIRFLOW_CONN_ATTENTIVE_DEFAULT=json.dumps(
                {"conn_type": "attentive", "host": emu.url, "password": "bf-key"}
            ),
            AIRFLOW_CONN_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")}),
        )
        subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
        logs = tmp_path / "logs"
        logs.mkdir()
        procs = [
            subprocess.Popen(
                [str(BIN / "airflow"), *cmd],
                env=env,
                stdout=(logs / f"{cmd[0]}.log").open("w"),
                stderr=subprocess.STDOUT,
            )
            for cmd in (
                ["api-server", "--host", "127.0.0.1", "--port", str(api_port)],
                ["dag-processor"],
                ["scheduler"],
            )
        ]
        try:
            yield env, emu, first_day, db
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


def _airflow(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"airflow {' '.join(args)}:\n{(proc.stdout + proc.stderr)[-3000:]}"
    return proc.stdout


def _runs(env: dict[str, str]) -> list[dict[str, Any]]:
    out = _airflow(env, "dags", "list-runs", DAG_ID, "-o", "json")
    for line in out.splitlines():  # log lines such as "[warning ] ..." come first
        if line.startswith("[{") or line.strip() == "[]":
            return list(json.loads(line))
    return []


def _open_backfills(db: dict[str, Any]) -> int:
    """Backfills the scheduler has not yet marked complete.

    The scheduler closes a backfill on its own timer (every 30 s in Airflow 3.3), not when its last run
    finishes; until then `backfill create` for the same DAG is refused with AlreadyRunningBackfill.
    """
    conn = pg_connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM backfill WHERE completed_at IS NULL")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def test_backfill_runs_each_interval_once_and_a_repeat_sends_nothing(
    airflow_stack: tuple[dict[str, str], Any, dt.datetime, dict[str, Any]],
) -> None:
    env, emu, first_day, db = airflow_stack
    _wait(lambda: DAG_ID in _airflow(env, "dags", "list", "-o", "plain"), 120, "the DAG to be parsed")
    start = first_day + dt.timedelta(days=1)
    end = first_day + dt.timedelta(days=3)
    _airflow(
        env,
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        start.strftime("%Y-%m-%d"),
        "--to-date",
        end.strftime("%Y-%m-%d"),
    )

    def finished() -> list[dict[str, Any]] | None:
        runs = [r for r in _runs(env) if "backfill" in r.get("run_id", "")]
        failed = [r for r in runs if r.get("state") == "failed"]
        assert not failed, f"backfill runs failed: {failed}"
        return runs if runs and all(r.get("state") == "success" for r in runs) else None

    runs = _wait(finished, 180, "the backfill runs to succeed")
    assert len(runs) == 3
    events = emu.client.events()
    # Three daily intervals, twelve shipments a day: each interval selected its own slice, once.
    assert len(events) == 36 and emu.client.stats()["duplicate_events"] == 0
    days = {e["body"]["occurredAt"][:10] for e in events}
    assert len(days) == 3

    # An overlapping backfill that also reprocesses the completed days: only the new day's events go out.
    _wait(lambda: _open_backfills(db) == 0, 120, "the scheduler to mark the first backfill complete")
    _airflow(
        env,
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        (start + dt.timedelta(days=1)).strftime("%Y-%m-%d"),
        "--to-date",
        (end + dt.timedelta(days=1)).strftime("%Y-%m-%d"),
        "--reprocess-behavior",
        "completed",
    )

    def repeated() -> bool:
        runs = [r for r in _runs(env) if "backfill" in r.get("run_id", "")]
        done = len(runs) == 4 and all(r.get("state") == "success" for r in runs)
        return done and emu.client.stats()["endpoints"]["events"]["requests"] >= 48

    _wait(repeated, 180, "the overlapping backfill to finish")
    stats = emu.client.stats()
    assert stats["endpoints"]["events"]["requests"] == 48 and stats["duplicate_events"] == 0
    assert len({e["body"]["occurredAt"][:10] for e in emu.client.events()}) == 4
