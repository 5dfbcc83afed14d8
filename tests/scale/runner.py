"""One "worker process" for the parallel-sync test and benchmark: real operators, started on a signal.

    python -m tests.scale.runner '<json config>'

Config: ``jobs`` (a list of ``{"object", "sql", "sql_conn_id", "primary_key", "mapping", "sync_id", "mode",
"options"}`` as ``tests.helpers.operators.build_operator`` reads them, each run as a real operator in its own
thread, the way two tasks share a Celery worker), ``ready_file`` and ``go_file``. After importing Airflow and building the operators (seconds), the runner creates
``ready_file`` and waits for ``go_file`` to exist, so several runners start sending at the same moment. The last
stdout line is JSON: ``{"jobs": [{"sync_id", "summary" | "error", "started", "finished"}, ...]}`` (wall-clock
times). Connections come from the environment (``AIRFLOW_CONN_ATTENTIVE_DEFAULT``, ``AIRFLOW_CONN_<ID>``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from tests.helpers.operators import TaskInstance, build_operator, context

# Airflow reads these when it is first imported, which building the first operator does.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="attentive-scale-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")


def run(config: dict[str, Any]) -> dict[str, Any]:
    operators = [(job, build_operator(job)) for job in config["jobs"]]
    Path(config["ready_file"]).touch()
    go = Path(config["go_file"])
    deadline = time.monotonic() + float(config.get("wait_s", 120))
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("no go signal")
        time.sleep(0.005)
    results: list[dict[str, Any]] = [{} for _ in operators]

    def execute(i: int, job: dict[str, Any], operator: Any) -> None:
        started = time.time()
        try:
            summary = operator.execute(context(TaskInstance(), "scale-run"))
            results[i] = {"sync_id": job["sync_id"], "summary": summary}
        except Exception as exc:
            results[i] = {
                "sync_id": job["sync_id"],
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        results[i].update(started=started, finished=time.time())

    threads = [threading.Thread(target=execute, args=(i, job, op)) for i, (job, op) in enumerate(operators)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"jobs": results}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    result = run(json.loads(argv[0]))
    sys.stdout.flush()
    sys.stdout.write("\n" + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return 1 if any("error" in job for job in result["jobs"]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
