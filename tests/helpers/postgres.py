"""A throwaway PostgreSQL server for the tests (a pytest plugin, loaded by ``tests/conftest.py``).

* ``postgres_server`` (session): initdb + pg_ctl from ``/usr/lib/postgresql/<version>/bin`` into a temp dir,
  listening on 127.0.0.1 on a free port, durability off (fsync, synchronous_commit, full_page_writes), UTC.
  Stopped with ``pg_ctl -m immediate stop`` and deleted at the end of the session. PostgreSQL refuses to
  run as root, so as root the server runs as the ``postgres`` system user created by Debian's package.
* ``pg_database`` (function): a fresh ``CREATE DATABASE t_<random>`` per test; returns psycopg2 connect
  keyword arguments (``pg_connect(params)`` opens a connection, ``pg_dsn(params)`` gives a libpq DSN).

The binaries come from Debian's ``postgresql`` package (``scripts/ensure-packages.sh postgres`` installs it). When
they are absent the requesting tests are skipped, unless ``ATTENTIVE_REQUIRE_POSTGRES=1`` (set it in CI),
in which case they fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ("PostgresServer", "find_bindir", "pg_connect", "pg_database", "pg_dsn", "postgres_server")

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
RUN_AS = "postgres"
START_TIMEOUT_S = 30


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway server; ``params`` connect to its ``postgres`` database as superuser."""

    bindir: Path
    datadir: Path
    host: str
    port: int
    user: str
    socket_dir: Path

    @property
    def params(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "dbname": "postgres"}


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has initdb and pg_ctl."""

    def version(path: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([\d.]+)/bin$", path)
        return tuple(int(p) for p in m.group(1).split(".")) if m else (0,)

    candidates = [
        d for d in glob.glob(PG_BIN_GLOB) if os.access(f"{d}/initdb", os.X_OK) and os.access(f"{d}/pg_ctl", os.X_OK)
    ]
    return Path(max(candidates, key=version)) if candidates else None


def pg_dsn(params: Mapping[str, Any]) -> str:
    """The libpq DSN (``host=... port=...``) for connect keyword arguments."""
    return " ".join(f"{k}={v}" for k, v in params.items())


def pg_connect(params: Mapping[str, Any] | str, **kwargs: Any) -> Any:
    """A psycopg2 connection to ``params`` (connect kwargs from ``pg_database``/``postgres_server``, or a DSN)."""
    import psycopg2

    if isinstance(params, str):
        return psycopg2.connect(params, **kwargs)
    return psycopg2.connect(**{**params, **kwargs})


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    """Prefix ``cmd`` so it runs as the ``postgres`` user when we are root (postgres refuses root)."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", RUN_AS, "--", *cmd]
    return ["su", RUN_AS, "-s", "/bin/sh", "-c", " ".join(f"'{c}'" for c in cmd)]


def _run(cmd: list[str], what: str, env: Mapping[str, str] | None = None) -> None:
    proc = subprocess.run(
        _as_server_user(cmd), capture_output=True, text=True, env=env, timeout=START_TIMEOUT_S * 2, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")


def _unavailable(reason: str) -> None:
    if os.environ.get("ATTENTIVE_REQUIRE_POSTGRES", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (ATTENTIVE_REQUIRE_POSTGRES is set)", pytrace=False)
    pytest.skip(reason)


def _wait_ready(params: Mapping[str, Any], deadline: float) -> None:
    import psycopg2

    while True:
        try:
            psycopg2.connect(**params, connect_timeout=2).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _start(bindir: Path, root: Path) -> PostgresServer:
    datadir, sockdir, logfile = root / "data", root / "sock", root / "server.log"
    sockdir.mkdir()
    if os.geteuid() == 0:
        try:
            ent = pwd.getpwnam(RUN_AS)
        except KeyError:
            _unavailable(f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as")
        for p in (root, sockdir):
            os.chown(p, ent.pw_uid, ent.pw_gid)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ],
        "initdb",
        env,
    )
    last: Exception | None = None
    for _ in range(3):  # the free port can be taken between probing and binding: retry with another
        port = _free_port()
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -k {sockdir} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c timezone=UTC -c max_connections=50 -c shared_buffers=32MB"
        )
        server = PostgresServer(bindir, datadir, "127.0.0.1", port, "postgres", sockdir)
        try:
            _run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(datadir),
                    "-l",
                    str(logfile),
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "-o",
                    opts,
                    "start",
                ],
                "pg_ctl start",
                env,
            )
            _wait_ready(server.params, time.monotonic() + START_TIMEOUT_S)
            return server
        except Exception as exc:
            last = exc
            _stop(server)
    log = logfile.read_text(errors="replace")[-3000:] if logfile.exists() else ""
    raise RuntimeError(f"could not start PostgreSQL: {last}\n--- server log ---\n{log}")


def _stop(server: PostgresServer) -> None:
    with contextlib.suppress(Exception):
        _run([str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-m", "immediate", "-w", "stop"], "pg_ctl stop")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the whole session (skipped when the binaries are absent)."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("psycopg2 is not installed")
    bindir = find_bindir()
    if bindir is None:
        _unavailable(
            f"PostgreSQL server binaries (initdb, pg_ctl) not found under {PG_BIN_GLOB}; "
            "run scripts/ensure-packages.sh postgres (apt-get install postgresql)"
        )
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="attentive-pg-"))
    try:
        server = _start(bindir, root)
        try:
            yield server
        finally:
            _stop(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[dict[str, Any]]:
    """A fresh, empty database for this test; returns psycopg2 connect kwargs. Dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = pg_connect(postgres_server.params)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield {**postgres_server.params, "dbname": name}
        with contextlib.suppress(Exception), admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
