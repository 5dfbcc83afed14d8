"""`airflow backfill create` on the events example DAG, executed by a real scheduler (LocalExecutor).

Starts api-server, dag-processor and scheduler against a throwaway PostgreSQL metadata database, backfills
three daily intervals, and checks that each run's templated interval selected its own slice and that
re-running the same intervals sends nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, KeySpec
from tests.helpers.airflow_cli import (
    airflow,
    airflow_env,
    airflow_services,
    attentive_conn,
    metadata,
    sqlite_conn,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "attentive_order_shipped_events"
pytestmark = [pytest.mark.slow, pytest.mark.postgres]


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
    with Emulator.spawn(keys={"bf-key": KeySpec(scopes=ALL_SCOPES)}) as emu:
        connections = {
            "attentive_default": attentive_conn(emu.url, "bf-key"),
            "warehouse": sqlite_conn(tmp_path / "warehouse.db"),
        }
        env = airflow_env(tmp_path / "airflow", ROOT / "dags", connections)
        # Unpaused, the scheduler also schedules the latest interval (yesterday), which has no shipments here.
        with airflow_services(env, pg_database, tmp_path / "logs", parallelism=4):
            yield env, emu, first_day, pg_database


def _runs(env: dict[str, str]) -> list[dict[str, Any]]:
    out = airflow(env, "dags", "list-runs", DAG_ID, "-o", "json")
    for line in out.splitlines():  # log lines such as "[warning ] ..." come first
        if line.startswith("[{") or line.strip() == "[]":
            return list(json.loads(line))
    return []


def _open_backfills(db: dict[str, Any]) -> int:
    """Backfills the scheduler has not yet marked complete.

    The scheduler closes a backfill on its own timer (every 30 s in Airflow 3.3), not when its last run
    finishes; until then `backfill create` for the same DAG is refused with AlreadyRunningBackfill.
    """
    return int(metadata(db, "SELECT count(*) FROM backfill WHERE completed_at IS NULL")[0][0])


def test_backfill_runs_each_interval_once_and_a_repeat_sends_nothing(
    airflow_stack: tuple[dict[str, str], Any, dt.datetime, dict[str, Any]],
) -> None:
    env, emu, first_day, db = airflow_stack
    wait_for(lambda: DAG_ID in airflow(env, "dags", "list", "-o", "plain"), 120, "the DAG to be parsed")
    start = first_day + dt.timedelta(days=1)
    end = first_day + dt.timedelta(days=3)
    airflow(
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

    runs = wait_for(finished, 180, "the backfill runs to succeed")
    assert len(runs) == 3
    events = emu.client.events()
    # Three daily intervals, twelve shipments a day: each interval selected its own slice, once.
    assert len(events) == 36 and emu.client.stats()["duplicate_events"] == 0
    days = {e["body"]["occurredAt"][:10] for e in events}
    assert len(days) == 3

    # An overlapping backfill that also reprocesses the completed days: only the new day's events go out.
    wait_for(lambda: _open_backfills(db) == 0, 120, "the scheduler to mark the first backfill complete")
    airflow(
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

    wait_for(repeated, 180, "the overlapping backfill to finish")
    stats = emu.client.stats()
    assert stats["endpoints"]["events"]["requests"] == 48 and stats["duplicate_events"] == 0
    assert len({e["body"]["occurredAt"][:10] for e in emu.client.events()}) == 4
