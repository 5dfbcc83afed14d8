"""The asyncio server of the emulator: owns the state, binds the socket and sends each request to its routes.

Requests under an API prefix (``/v1``, ``/v2``) go to :class:`~.api.ApiRoutes`, ``/_emulator/...`` to
:class:`~.control.ControlRoutes`; the wire format is :mod:`.framing`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .api import ApiRoutes
from .control import ControlRoutes
from .endpoints import API_ROUTES
from .faults import FaultConfig, FaultInjector
from .framing import READ_LIMIT, Reply, Request, serve_connection
from .jobs import JobSettings
from .keys import KeySpec
from .replies import ErrorReplies
from .schemas import RequestValidator, get_request_validator
from .state import EmulatorState

__all__ = ["EmulatorServer"]

log = logging.getLogger("airflow_provider_attentive.emulator")


class EmulatorServer:
    """The asyncio server: owns the :class:`EmulatorState` and serves it on one event loop.

    Use :class:`~.runner.Emulator` from synchronous code; use this directly inside a running loop.
    """

    def __init__(
        self,
        keys: Mapping[str, KeySpec] | None = None,
        limits: Mapping[str, int] | None = None,
        faults: FaultConfig | Mapping[str, Any] | None = None,
        sign_up_sources: Mapping[str, str] | None = None,
        sign_up_units: Iterable[Mapping[str, str]] | None = None,
        log_requests: bool = False,
        jobs: JobSettings | Mapping[str, Any] | None = None,
    ) -> None:
        if jobs is not None and not isinstance(jobs, JobSettings):
            jobs = JobSettings.from_mapping(jobs)
        self.state = EmulatorState(
            keys=keys,
            limits=limits,
            sign_up_sources=sign_up_sources,
            sign_up_units=sign_up_units,
            job_settings=jobs,
        )
        if faults is not None and not isinstance(faults, FaultConfig):
            faults = FaultConfig.from_mapping(faults)
        self.faults = FaultInjector(faults)
        self.validator: RequestValidator = get_request_validator()
        self._errors = ErrorReplies()
        self.api = ApiRoutes(self.state, self.faults, self.validator, self._errors, log_requests)
        self.control = ControlRoutes(self.state, self.faults, self._errors, lambda: self.url)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.host = ""
        self.port = 0

    @property
    def log_requests(self) -> bool:
        """Whether every API request is logged at INFO (otherwise at DEBUG)."""
        return self.api.log_requests

    @log_requests.setter
    def log_requests(self, value: bool) -> None:
        self.api.log_requests = value

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and start accepting; returns the bound port (useful with ``port=0``)."""
        self._server = await asyncio.start_server(
            self._handle_connection, host, port, limit=READ_LIMIT, backlog=1024, reuse_address=True
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        self.state.jobs.api_host = self.url.removeprefix("http://")
        return self.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop accepting, abort open connections (including hung requests) and wait for handlers."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- requests -----------------------------------------------------------------------------

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Tracked so close() can cancel hung requests instead of waiting them out.
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await serve_connection(reader, writer, self._respond, self._errors)
        finally:
            if task is not None:
                self._connections.discard(task)

    async def _respond(self, req: Request) -> Reply:
        try:
            return await self._dispatch(req)
        except Exception as exc:
            # An emulator bug should surface as a readable 500, not a silent disconnect.
            log.exception("emulator failed on %s %s", req.method, req.path)
            return self._errors(500, f"emulator internal error: {type(exc).__name__}: {exc}")

    async def _dispatch(self, req: Request) -> Reply:
        # Bulk jobs complete on time whichever request comes next, an inspection included.
        self.state.jobs.advance(time.monotonic())
        if self.control.serves(req.path):
            return self.control.handle(req)
        if self.api.serves(req.path):
            return await self.api.handle(req)
        prefixes = ", ".join(API_ROUTES.prefixes)
        return self._errors(404, f"no route for {req.method} {req.path}; the API lives under {prefixes}")
