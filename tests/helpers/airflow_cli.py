"""Real Airflow for end-to-end tests: its environment, the CLI, and a scheduler with its services.

Every e2e test runs Airflow as a user would, in subprocesses: ``airflow dags test``, or an api-server,
dag-processor, scheduler (and triggerer) against a throwaway PostgreSQL metadata database.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.helpers.postgres import pg_connect

__all__ = [
    "AIRFLOW",
    "airflow",
    "airflow_env",
    "airflow_services",
    "attentive_conn",
    "free_port",
    "metadata",
    "sqlite_conn",
    "wait_for",
]

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def attentive_conn(url: str, key: str) -> dict[str, Any]:
    """An ``attentive`` connection to the emulator at ``url``."""
    return {"conn_type": "attentive", "host": url, "password": key}


def sqlite_conn(path: Path | str) -> dict[str, Any]:
    """A ``sqlite`` connection to the database file at ``path``."""
    return {"conn_type": "sqlite", "host": str(path)}


def airflow_env(home: Path, dags: Path, connections: Mapping[str, Mapping[str, Any]], **extra: str) -> dict[str, str]:
    """This process's environment plus Airflow's home, DAG folder and ``connections`` (``{conn_id: fields}``)."""
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    for conn_id, fields in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(dict(fields))
    env.update(extra)
    return env


def airflow(env: Mapping[str, str], *args: str, timeout: float = 300) -> str:
    """Run ``airflow <args>``; fail the test with the end of its output unless it exits 0. Returns the output."""
    proc = subprocess.run([AIRFLOW, *args], env=dict(env), capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"airflow {' '.join(args)} failed:\n{output[-4000:]}"
    return output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def metadata(db: Mapping[str, Any], sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a query on the metadata database (the CLI costs seconds per call; this, milliseconds)."""
    conn = pg_connect(dict(db))
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


@contextlib.contextmanager
def airflow_services(
    env: dict[str, str], db: Mapping[str, Any], logs: Path, *, triggerer: bool = False, parallelism: int = 2
) -> Iterator[None]:
    """A scheduler (LocalExecutor), dag-processor and api-server (and a triggerer) on the metadata database ``db``.

    ``env`` is updated in place, so that CLI calls made with it reach the same database; each service logs to
    ``logs/<service>.log``. The services are stopped on exit.
    """
    api_port = free_port()
    env.update(
        # The scheduler starts no run of a paused DAG, backfills and triggered runs included.
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM=str(parallelism),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"postgresql+psycopg2://{db['user']}@{db['host']}:{db['port']}/{db['dbname']}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET="e2e-test-secret-not-for-production",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
    )
    airflow(env, "db", "migrate")
    logs.mkdir(parents=True, exist_ok=True)
    commands = [["api-server", "--host", "127.0.0.1", "--port", str(api_port)], ["dag-processor"], ["scheduler"]]
    if triggerer:
        commands.append(["triggerer"])
    procs = [
        subprocess.Popen([AIRFLOW, *cmd], env=env, stdout=(logs / f"{cmd[0]}.log").open("w"), stderr=subprocess.STDOUT)
        for cmd in commands
    ]
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
