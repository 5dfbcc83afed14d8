"""Run one real Attentive sync operator in its own process, for the crash tests.

    python -m tests.crash.runner '<json config>'

builds the operator described by the JSON (``tests.helpers.operators.build_operator``), calls ``execute`` and
prints the summary JSON as the last line of stdout (exit code 0). When the task fails, the last line is
``{"error": <exception type>, "message": ..., "summary": <summary or null>}`` and the exit code is 1.
Connections come from the environment (``AIRFLOW_CONN_ATTENTIVE_DEFAULT``, ``AIRFLOW_CONN_WAREHOUSE``, ...).

Config keys: ``object`` (``attributes`` | ``events`` | ``segments`` | ``subscriptions``), ``sql``, ``primary_key``,
``mapping``, ``mode`` (subscriptions, segments), ``sync_id``, ``task_id``, ``sql_conn_id`` (default ``warehouse``),
``run_id``, ``try_number``, ``options`` (any other operator keyword argument: ``batch_size``, ``resend_in_doubt``,
``max_rows_per_run``, ``max_runtime``, ``lock_wait``, ``event_type``, ``sign_up_source_id``, ...) and ``engine``
(``SyncOptions`` fields the operators do not expose, such as ``lock_ttl_s``; passed through the operators'
``sync_options()`` hook).

Importing Airflow takes seconds, and the crash tests start dozens of runs, so

    python -m tests.crash.runner --fork-server

imports everything once and then forks one child per request: each child is a separate process running the
same :func:`run` as the command above (it can be SIGKILLed like any task). Requests are JSON lines on stdin,
``{"id", "config", "env", "output"}``; the server answers ``{"id", "pid"}`` when the child starts and
``{"id", "rc"}`` when it exits (``rc`` is negative for a signal, -9 for SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import tempfile
from typing import Any

from tests.helpers.operators import TaskInstance, build_operator, context

# Airflow reads these when it is first imported, which building the first operator does.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="attentive-crash-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")


def run(config: dict[str, Any]) -> int:
    """Execute one operator; print the summary (or the error) as the last stdout line; return the exit code."""
    ti = TaskInstance(int(config.get("try_number", 1)))
    try:
        summary = build_operator(config).execute(context(ti, config.get("run_id", "crash-run")))
    except Exception as exc:
        result: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc), "summary": ti.xcom.get("summary")}
        code = 1
    else:
        result, code = summary, 0
    sys.stderr.flush()
    sys.stdout.flush()
    sys.stdout.write("\n" + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return code


# ------------------------------------------------------------------------------------------ fork server ----


def _child(request: dict[str, Any], protocol_fd: int) -> None:
    """In the forked child: redirect output, take the run's environment, run, and exit without cleanup."""
    code = 70
    try:
        os.close(protocol_fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        out = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.environ.update(request.get("env") or {})
        code = run(request["config"])
    except BaseException as exc:  # report anything, never return into the server loop
        with contextlib.suppress(OSError):
            os.write(2, f"runner child failed: {type(exc).__name__}: {exc}\n".encode())
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> int:
    """Pre-import the operators, then fork one child per request line (see the module docstring)."""
    import airflow_provider_attentive.operators.attributes
    import airflow_provider_attentive.operators.events
    import airflow_provider_attentive.operators.segments
    import airflow_provider_attentive.operators.subscriptions  # noqa: F401

    # The protocol gets its own descriptor; anything else printed to stdout (import warnings) goes to stderr.
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)

    def emit(message: dict[str, Any]) -> None:
        os.write(protocol_fd, (json.dumps(message) + "\n").encode())

    children: dict[int, Any] = {}
    buffer = b""
    stdin_open = True
    while stdin_open or children:
        if stdin_open:
            ready, _, _ = select.select([0], [], [], 0.01)
            if ready:
                data = os.read(0, 65536)
                if not data:
                    stdin_open = False
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    request = json.loads(line)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:
                        _child(request, protocol_fd)
                    children[pid] = request["id"]
                    emit({"id": request["id"], "pid": pid})
        else:
            select.select([], [], [], 0.01)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            emit({"id": children.pop(pid), "rc": os.waitstatus_to_exitcode(status)})
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--fork-server"]:
        return serve()
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    return run(json.loads(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
