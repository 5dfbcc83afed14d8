"""Several sync processes at once against one emulator key: shared by the scale test and the benchmark.

:func:`run_parallel_syncs` gives each process its own SQLite warehouse (an attributes model and a subscriber
list, with phone numbers no other process uses) and runs ``tests.scale.runner`` in it: an attributes sync and a
subscriptions sync (mode ``add``) as two operators in two threads, all processes released at the same moment.
Every process uses the same Attentive connection (one key), so the emulator sees their combined traffic.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_attentive.emulator import EmulatorProcess
from tests.helpers.phones import phone

__all__ = ("ParallelRun", "make_warehouse", "run_parallel_syncs")

ROOT = Path(__file__).resolve().parents[2]
SIGN_UP_SOURCE_ID = "64140"


@dataclass
class ParallelRun:
    """What happened: per-process runner output, wall-clock times and the emulator's view."""

    processes: list[dict[str, Any]]
    returncodes: list[int]
    released_at: float
    finished_at: float
    stats: dict[str, Any]
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)

    def endpoint(self, name: str) -> dict[str, Any]:
        return dict(self.stats["endpoints"][name])

    def server_rate(self, name: str) -> float:
        """Combined arrivals per second at the emulator, first to last arrival on ``name``."""
        times = self.arrivals.get(name) or []
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def summaries(self) -> list[dict[str, Any]]:
        return [job for proc in self.processes for job in proc.get("jobs", [])]


def make_warehouse(path: Path, index: int, attributes_rows: int, subscribe_rows: int) -> None:
    """Process ``index``'s model: ``customers`` from phone ``index * 100_000``, ``members`` from 50,000 above it."""
    base = index * 100_000
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT, tier TEXT, ltv REAL)")
        conn.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?)",
            [(i, phone(base + i), ("gold", "silver", "bronze")[i % 3], i * 1.5) for i in range(attributes_rows)],
        )
        conn.execute("CREATE TABLE members (phone TEXT PRIMARY KEY)")
        conn.executemany("INSERT INTO members VALUES (?)", [(phone(base + 50_000 + i),) for i in range(subscribe_rows)])
    conn.close()


def run_parallel_syncs(
    emulator: EmulatorProcess,
    api_key: str,
    workdir: Path,
    *,
    extra: dict[str, Any],
    processes: int = 3,
    attributes_rows: int = 1500,
    subscribe_rows: int = 50,
    timeout_s: float = 240.0,
    env: dict[str, str] | None = None,
) -> ParallelRun:
    """Run ``processes`` runners at once; ``extra`` is the Attentive connection's extras (the backend).

    ``env`` adds environment variables to every runner (another connection, such as the SQL backend's).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    go_file = workdir / "go"
    attentive = json.dumps({"conn_type": "attentive", "host": emulator.url, "password": api_key, "extra": extra})
    procs: list[tuple[subprocess.Popen[str], Path, Path]] = []
    try:
        for index in range(processes):
            wh_attr = workdir / f"warehouse-{index}-attributes.db"
            wh_subs = workdir / f"warehouse-{index}-subscriptions.db"
            # Two files: two syncs in one SQLite file would block each other's commits behind open reads.
            make_warehouse(wh_attr, index, attributes_rows, 0)
            make_warehouse(wh_subs, index, 0, subscribe_rows)
            jobs: list[dict[str, Any]] = []
            if attributes_rows:
                jobs.append(
                    {
                        "object": "attributes",
                        "sync_id": f"scale.attributes.{index}",
                        "sql": "SELECT id, phone, tier, ltv FROM customers",
                        "sql_conn_id": "wh_attributes",
                        "primary_key": "id",
                        "mapping": {"phone": "phone", "tier": "tier", "ltv": "lifetime_value"},
                        "options": {"max_failed_ratio": 0.0},
                    }
                )
            if subscribe_rows:
                jobs.append(
                    {
                        "object": "subscriptions",
                        "mode": "add",
                        "sync_id": f"scale.subscriptions.{index}",
                        "sql": "SELECT phone FROM members",
                        "sql_conn_id": "wh_subscriptions",
                        "primary_key": "phone",
                        "options": {"sign_up_source_id": SIGN_UP_SOURCE_ID, "max_failed_ratio": 0.0},
                    }
                )
            config = {"jobs": jobs, "ready_file": str(workdir / f"ready-{index}"), "go_file": str(go_file)}
            child_env = {
                **os.environ,
                "AIRFLOW_HOME": str(workdir / f"airflow-home-{index}"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW_CONN_ATTENTIVE_DEFAULT": attentive,
                "AIRFLOW_CONN_WH_ATTRIBUTES": json.dumps({"conn_type": "sqlite", "host": str(wh_attr)}),
                "AIRFLOW_CONN_WH_SUBSCRIPTIONS": json.dumps({"conn_type": "sqlite", "host": str(wh_subs)}),
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            }
            log_path = workdir / f"runner-{index}.log"
            log = open(log_path, "w")  # noqa: SIM115 - closed below
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.scale.runner", json.dumps(config)],
                cwd=ROOT,
                env=child_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
            log.close()
            procs.append((proc, workdir / f"ready-{index}", log_path))
        deadline = time.monotonic() + 120
        while not all(ready.exists() for _, ready, _ in procs):
            failed = [p.returncode for p, _, _ in procs if p.poll() is not None]
            if failed or time.monotonic() > deadline:
                raise RuntimeError(f"runners did not get ready (exit codes {failed}); see {workdir}/runner-*.log")
            time.sleep(0.02)
        released_at = time.time()
        go_file.touch()
        codes = []
        for proc, _, _ in procs:
            remaining = max(1.0, released_at + timeout_s - time.time())
            codes.append(proc.wait(remaining))
        finished_at = time.time()
    finally:
        for proc, _, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    outputs, logs = [], []
    for _, _, log_path in procs:
        text = log_path.read_text()
        logs.append(text)
        last = text.strip().splitlines()[-1] if text.strip() else ""
        try:
            outputs.append(json.loads(last))
        except ValueError:
            outputs.append({"error": last})
    stats = emulator.client.stats()
    arrivals: dict[str, list[float]] = {}
    for entry in emulator.client.requests():
        arrivals.setdefault(entry["endpoint"], []).append(float(entry["received_at"]))
    for times in arrivals.values():
        times.sort()
    return ParallelRun(outputs, codes, released_at, finished_at, stats, arrivals, logs)
