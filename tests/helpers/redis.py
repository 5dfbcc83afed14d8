"""A throwaway ``redis-server`` on a free loopback port, for the shared rate-limit tests and benchmark.

The ``redis_server`` fixture (one server per test module, emptied before each test) is imported by the
conftest of each test package that uses it.

The binary comes from Debian's ``redis-server`` package (``scripts/ensure-packages.sh redis``). When it is
missing, :func:`require_redis_server` skips the test, unless ``ATTENTIVE_REQUIRE_REDIS`` is set (``make test``
sets it), in which case the test fails. No persistence (``--save '' --appendonly no``); the data directory is a
temporary one, deleted on stop.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["RedisServer", "free_port", "redis_server", "require_redis_server"]

REDIS_BIN = os.environ.get("REDIS_SERVER_BIN", "redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` bound to 127.0.0.1; :meth:`stop` then :meth:`start` again keeps the port."""

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        found = shutil.which(binary or REDIS_BIN)
        if found is None:
            raise FileNotFoundError(f"{binary or REDIS_BIN} not found (scripts/ensure-packages.sh redis installs it)")
        self.binary = found
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="attentive-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        cmd = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def require_redis_server() -> RedisServer:
    """A started server, or skip the test (fail when ``ATTENTIVE_REQUIRE_REDIS`` is set)."""
    try:
        return RedisServer().start()
    except FileNotFoundError as exc:
        if os.environ.get("ATTENTIVE_REQUIRE_REDIS"):
            pytest.fail(f"{exc}; ATTENTIVE_REQUIRE_REDIS is set")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def _redis_module() -> Iterator[RedisServer]:
    if not os.environ.get("ATTENTIVE_REQUIRE_REDIS"):
        pytest.importorskip("redis")
    server = require_redis_server()
    yield server
    server.close()


@pytest.fixture
def redis_server(_redis_module: RedisServer) -> Iterator[RedisServer]:
    """The module's server, emptied for this test (restarted if a test stopped it)."""
    import redis

    if _redis_module.process is None:
        _redis_module.start()
    client = redis.Redis.from_url(_redis_module.url)
    client.flushall()
    client.close()
    yield _redis_module
