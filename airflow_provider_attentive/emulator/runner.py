"""Run the emulator from synchronous code: on a background thread, or as a separate process.

:class:`Emulator` serves an :class:`~.server.EmulatorServer` from a thread with its own event loop
(tests, the demo); :meth:`Emulator.spawn` starts ``python -m airflow_provider_attentive.emulator``
and returns an :class:`EmulatorProcess` (benchmarks, and tests that kill or signal processes).
Both hand out an :class:`~.client.EmulatorClient` for the control routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .faults import FaultConfig
from .jobs import JobSettings
from .keys import KeySpec
from .server import EmulatorServer

if TYPE_CHECKING:
    from .client import EmulatorClient

__all__ = ["Emulator", "EmulatorProcess"]


class _ClientHandle:
    """The control client shared by :class:`Emulator` and :class:`EmulatorProcess` (created on first use)."""

    _client: EmulatorClient | None = None

    @property
    def url(self) -> str:
        """Base URL of the emulated API, e.g. ``http://127.0.0.1:8089``."""
        raise NotImplementedError

    @property
    def client(self) -> EmulatorClient:
        """An :class:`EmulatorClient` bound to this emulator."""
        if self._client is None:
            from .client import EmulatorClient

            self._client = EmulatorClient(self.url)
        return self._client

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class Emulator(_ClientHandle):
    """A local Attentive API served from a background thread with its own event loop.

    ``keys`` defaults to ``{"test-key": KeySpec()}`` (all scopes); ``jobs`` sets how v2 bulk jobs
    behave (:class:`~.jobs.JobSettings`, restored by every reset). Use as a context manager or call
    :meth:`start` / :meth:`stop`. ``url`` is the base URL without ``/v1``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        keys: Mapping[str, KeySpec] | None = None,
        limits: Mapping[str, int] | None = None,
        faults: FaultConfig | Mapping[str, Any] | None = None,
        sign_up_sources: Mapping[str, str] | None = None,
        sign_up_units: Iterable[Mapping[str, str]] | None = None,
        log_requests: bool = False,
        jobs: JobSettings | Mapping[str, Any] | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._server = EmulatorServer(
            keys=keys if keys is not None else {"test-key": KeySpec()},
            limits=limits,
            faults=faults,
            sign_up_sources=sign_up_sources,
            sign_up_units=sign_up_units,
            log_requests=log_requests,
            jobs=jobs,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: EmulatorClient | None = None

    def __repr__(self) -> str:
        return f"Emulator(url={self.url if self._thread else None!r})"

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        if self._thread is None:
            raise RuntimeError("Emulator is not started")
        return self._server.url

    def start(self, timeout: float = 10.0) -> Emulator:
        """Start serving; returns self once the socket is bound."""
        if self._thread is not None:
            raise RuntimeError("Emulator already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._server.start(self.host, self._requested_port))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._server.close())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name="attentive-emulator", daemon=True)
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("Attentive emulator did not start in time")
        if failure:
            thread.join()
            raise failure[0]
        self._loop, self._thread = loop, thread
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the background thread (idempotent)."""
        self._close_client()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = None

    def __enter__(self) -> Emulator:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @staticmethod
    def spawn(
        host: str = "127.0.0.1",
        port: int = 0,
        keys: Mapping[str, KeySpec] | None = None,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> EmulatorProcess:
        """Start the emulator in a separate process (``python -m ...emulator``) and wait until ready.

        Keys travel through the ``ATTENTIVE_EMULATOR_KEYS`` environment variable rather than
        argv so they do not show up in process listings. ``extra_args`` are CLI flags
        (e.g. ``["--latency-ms", "20"]``).
        """
        keys = keys if keys is not None else {"test-key": KeySpec()}
        child_env = dict(os.environ if env is None else env)
        child_env["ATTENTIVE_EMULATOR_KEYS"] = json.dumps({k: spec.to_dict() for k, spec in keys.items()})
        child_env["PYTHONUNBUFFERED"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "airflow_provider_attentive.emulator",
            "--host",
            host,
            "--port",
            str(port),
            *extra_args,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=child_env, text=True)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            # Keep draining stdout so the child can never block on a full pipe.
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name="attentive-emulator-stdout", daemon=True).start()
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"attentive-emulator did not report readiness in {startup_timeout}s") from None
            if line is None:
                code = proc.wait()
                raise RuntimeError(f"attentive-emulator exited with code {code} before becoming ready")
            match = re.search(r"https?://\S+", line)
            if match:
                return EmulatorProcess(proc, match.group(0))


class EmulatorProcess(_ClientHandle):
    """A running emulator subprocess; stop it with :meth:`stop` or use as a context manager."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self._url = url
        self._client: EmulatorClient | None = None

    @property
    def url(self) -> str:
        """Base URL of the emulated API."""
        return self._url

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM the process and wait (SIGKILL after ``timeout``); returns the exit code."""
        self._close_client()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
