"""Crash tests' machinery: real operators in their own processes, killed at seeded points.

:class:`Launcher` starts ``tests.crash.runner`` for a config against one test's emulator and warehouse:
:meth:`Launcher.complete` runs to the end, :meth:`Launcher.kill_during` SIGKILLs it at a seeded point. Runs
are forked from a pre-warmed :class:`ForkServer` (``--fork-server``: importing Airflow costs ~4 s per process)
unless ``exec=True`` asks for a plain ``python -m tests.crash.runner '<json>'``; ``CRASH_RUNNER=exec`` makes
every run a plain one.

Seeds derive from ``CRASH_SEED`` (default below) and the test name, so a failure replays with the same kill
points; timing on a loaded machine still moves a kill by a few requests either way.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import EmulatorProcess
from airflow_provider_attentive.emulator.client import EmulatorClient
from tests.helpers.records import request_count
from tests.helpers.warehouse import Warehouse

__all__ = (
    "API_KEY",
    "LOCK_TTL_S",
    "NOREAD_KEY",
    "SEED",
    "ForkServer",
    "Launcher",
    "Run",
    "assert_accounted",
    "assert_no_secrets",
    "connection_env",
    "in_doubt_bound",
    "rng_for",
)

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("CRASH_SEED", "20251126"))
API_KEY = "crash-test-key-4f9c2a"
NOREAD_KEY = "crash-noread-key-7d1e"  # subscriptions:write without subscriptions:read
LOCK_TTL_S = 0.5  # engine lock TTL for runs that get killed: the next run waits this long at most


def rng_for(request: pytest.FixtureRequest, *extra: Any) -> random.Random:
    """A random generator seeded from ``CRASH_SEED``, the test's name and ``extra``."""
    return random.Random(f"{SEED}:{request.node.name}:{':'.join(map(str, extra))}")


# --------------------------------------------------------------------------------------------- runner ----


def connection_env(url: str, db: Path, **extra: Any) -> dict[str, str]:
    """Connections as Airflow reads them from the environment: attentive_default, attentive_noread, warehouse."""
    extras = {
        "timeout": 2,
        "max_attempts": 4,
        "max_concurrency": 8,
        "rate_limit_subscribe": 50,
        "rate_limit_unsubscribe": 50,
        **extra,
    }

    def attentive(key: str) -> str:
        return json.dumps({"conn_type": "attentive", "host": url, "password": key, "extra": extras})

    return {
        "AIRFLOW_CONN_ATTENTIVE_DEFAULT": attentive(API_KEY),
        "AIRFLOW_CONN_ATTENTIVE_NOREAD": attentive(NOREAD_KEY),
        "AIRFLOW_CONN_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(db)}),
    }


class ForkServer:
    """``python -m tests.crash.runner --fork-server``: one warm process that forks a child per run."""

    def __init__(self, log_path: Path) -> None:
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash.runner", "--fork-server"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._ids = itertools.count(1)
        self._pids: dict[int, int] = {}
        self._rcs: dict[int, int] = {}
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        threading.Thread(target=self._read, name="crash-fork-server", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            with self._cond:
                if "pid" in message:
                    self._pids[message["id"]] = message["pid"]
                if "rc" in message:
                    self._rcs[message["id"]] = message["rc"]
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def start(self, config: dict[str, Any], env: dict[str, str], output: Path) -> tuple[int, int]:
        rid = next(self._ids)
        line = json.dumps({"id": rid, "config": config, "env": env, "output": str(output)}) + "\n"
        with self._write_lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        with self._cond:
            if not self._cond.wait_for(lambda: rid in self._pids or self.proc.poll() is not None, timeout=30):
                raise RuntimeError("the crash runner fork server did not start a child")
        if rid not in self._pids:
            raise RuntimeError(f"the crash runner fork server died (exit {self.proc.returncode})")
        return rid, self._pids[rid]

    def wait(self, rid: int, timeout: float) -> int | None:
        with self._cond:
            self._cond.wait_for(lambda: rid in self._rcs, timeout=timeout)
            return self._rcs.get(rid)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@dataclass
class Run:
    """One runner process."""

    config: dict[str, Any]
    output_path: Path
    pid: int
    started: float
    _wait: Any
    rc: int | None = None
    ended: float | None = None

    def wait(self, timeout: float = 180) -> int:
        if self.rc is None:
            rc = self._wait(timeout)
            if rc is None:
                self.kill()
                rc = self._wait(30)
                raise AssertionError(f"runner did not finish within {timeout}s; output:\n{self.output[-3000:]}")
            self.rc, self.ended = rc, time.monotonic()
        return self.rc

    def poll(self) -> int | None:
        if self.rc is None:
            rc = self._wait(0)
            if rc is not None:
                self.rc, self.ended = rc, time.monotonic()
        return self.rc

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: the process stays as it is, reading no answer and writing nothing, until it is killed."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGSTOP)

    @property
    def killed(self) -> bool:
        return self.rc == -signal.SIGKILL

    @property
    def output(self) -> str:
        try:
            return self.output_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def result(self) -> dict[str, Any]:
        """The last stdout line: the summary, or ``{"error", "message", "summary"}``."""
        lines = [line for line in self.output.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"runner printed nothing (rc={self.rc})")
        try:
            return json.loads(lines[-1])
        except ValueError:
            raise AssertionError(f"runner's last line is not JSON (rc={self.rc}):\n{self.output[-3000:]}") from None


@dataclass
class Launcher:
    """Starts runner processes for one test against its emulator and warehouse."""

    emulator: EmulatorProcess
    warehouse: Warehouse
    workdir: Path
    fork_server: ForkServer
    env: dict[str, str] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    _counter: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def client(self) -> EmulatorClient:
        return self.emulator.client

    def set_connection(self, **extra: Any) -> None:
        """Change the Attentive connection extras (timeout, max_attempts, rate limits...) for later runs."""
        self.env = connection_env(self.emulator.url, self.warehouse.path, **extra)

    def start(self, config: dict[str, Any], *, exec: bool = False) -> Run:
        n = next(self._counter)
        config = {"run_id": f"run-{n}", **config}
        output = self.workdir / f"run-{n}.log"
        if exec or os.environ.get("CRASH_RUNNER") == "exec":
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.crash.runner", json.dumps(config)],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=open(output, "wb"),  # noqa: SIM115 - the child owns it
                stderr=subprocess.STDOUT,
            )

            def wait(timeout: float) -> int | None:
                try:
                    return proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    return None

            run = Run(config, output, proc.pid, time.monotonic(), wait)
        else:
            rid, pid = self.fork_server.start(config, self.env, output)
            run = Run(config, output, pid, time.monotonic(), lambda t, rid=rid: self.fork_server.wait(rid, t))
        self.runs.append(run)
        return run

    def complete(self, config: dict[str, Any], *, expect_rc: int | None = 0, exec: bool = False) -> dict[str, Any]:
        """Run to the end and return the last line (summary, or error when ``expect_rc`` is 1)."""
        self.warehouse.wait_lock_expiry(config["sync_id"])
        run = self.start(config, exec=exec)
        rc = run.wait()
        if expect_rc is not None:
            assert rc == expect_rc, f"runner exited {rc}, expected {expect_rc}:\n{run.output[-4000:]}"
        return run.result

    def kill_during(
        self,
        config: dict[str, Any],
        rng: random.Random,
        *,
        endpoint: str | None = None,
        after: tuple[int, int] = (1, 30),
        delay: tuple[float, float] = (0.0, 0.3),
        timeout: float = 60,
    ) -> Run:
        """Start a run and SIGKILL it at a seeded point.

        With ``endpoint``, the kill lands once the emulator has received a seeded number of requests in
        ``after`` on that endpoint since the start, plus a seeded 0-20 ms (so it falls between a request's
        arrival and its answer as often as between requests); otherwise after a seeded ``delay`` in seconds.
        """
        self.warehouse.wait_lock_expiry(config["sync_id"])
        base = request_count(self.client, endpoint) if endpoint else 0
        target = rng.randint(*after)
        pause = rng.uniform(0.0, 0.02) if endpoint else rng.uniform(*delay)

        def ready() -> bool:
            return endpoint is None or request_count(self.client, endpoint) - base >= target

        return self.kill_when(config, ready, pause=pause, timeout=timeout)

    def kill_when(
        self,
        config: dict[str, Any],
        ready: Callable[[], bool],
        *,
        pause: float = 0.0,
        then: Callable[[Run], None] | None = None,
        timeout: float = 60,
    ) -> Run:
        """Start a run and SIGKILL it ``pause`` seconds after ``ready()`` first holds (polled every 5 ms).

        ``then(run)`` is called between ``ready()`` and the pause: to freeze the run and wait for what
        Attentive does meanwhile, say.
        """
        self.warehouse.wait_lock_expiry(config["sync_id"])
        run = self.start(config)
        deadline = time.monotonic() + timeout
        while run.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.005)
        if then is not None:
            then(run)
        time.sleep(pause)
        run.kill()
        run.wait()
        return run


# ---------------------------------------------------------------------------------------- assertions ----


def in_doubt_bound(batch_size: int, max_concurrency: int = 8) -> int:
    """Most rows a crash can leave with an intent and no outcome (see docs/guarantees.md).

    In flight: the transport pulls at most 2 x max_concurrency requests ahead (its look-ahead, half a second of
    the endpoint's rate, never exceeds that); intents are written a whole batch
    at a time (so up to batch_size - 1 more than were pulled); outcomes are flushed once batch_size have
    accumulated (so up to batch_size - 1 answered rows not yet recorded).
    """
    return 2 * max_concurrency + 2 * (batch_size - 1)


def assert_accounted(summary: dict[str, Any], ops: tuple[str, ...] | None = None) -> None:
    """Every row read is invalid, unchanged, succeeded, failed, in doubt, held or remaining (attributes, events).

    ``ops``: the operations rows of the model make, when others (a mirror's removals of people no longer in the
    model, a segment's retired identifiers) are counted beside them; every operation by default.
    """
    s = summary
    total = (
        s["invalid"]
        + s["unchanged"]
        + sum(n for op, n in s["succeeded"].items() if ops is None or op in ops)
        + sum(n for op, n in s["failed"].items() if ops is None or op in ops)
        + s["in_doubt"]
        + s["remaining"]
        + s.get("nothing_to_send", 0)
        + s.get("held_unknown_state", 0)
    )
    assert total == s["rows_read"], f"rows not accounted for: {total} != {s['rows_read']} in {s}"


def assert_no_secrets(text: str, phones: list[str]) -> None:
    """Neither the API keys nor any phone number in clear (or URL-encoded) appear in ``text``."""
    for key in (API_KEY, NOREAD_KEY):
        assert key not in text, "the API key appears in the output"
    for p in phones:
        for form in (p, p.replace("+", "%2B"), p.lstrip("+")):
            assert form not in text, f"a phone number appears in clear in the output ({form[:4]}...)"
