"""Asyncio HTTP/1.1 server emulating the Attentive v1 REST API, plus control routes.

The HTTP layer is a deliberately small hand-written parser (request line, headers,
Content-Length or chunked body, keep-alive) on asyncio streams: it keeps per-request
overhead low enough that the emulator is never the bottleneck of a sync benchmark, and
it lets fault injection do things a framework would not (drop a connection mid-request).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
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
from urllib.parse import parse_qs

from .schemas import RequestValidator, get_request_validator
from .state import (
    ALL_SCOPES,
    DEFAULT_LIMIT,
    ENDPOINT_SCOPES,
    ENDPOINTS,
    ApiError,
    EmulatorState,
    FaultConfig,
    FaultDecision,
    FaultInjector,
    KeySpec,
    mask_key,
    validate_sign_up_sources,
    validate_sign_up_units,
)

if TYPE_CHECKING:
    from .client import EmulatorClient

log = logging.getLogger("airflow_provider_attentive.emulator")

#: Path under /v1 -> {method: endpoint name}.
API_ROUTES: dict[str, dict[str, str]] = {
    "/v1/me": {"GET": "me"},
    "/v1/attributes/custom": {"POST": "attributes", "GET": "attributes_read"},
    "/v1/events/custom": {"POST": "events"},
    "/v1/subscriptions": {"POST": "subscribe", "GET": "subscriptions_read"},
    "/v1/subscriptions/unsubscribe": {"POST": "unsubscribe"},
    "/v1/identity-resolution/user-identifiers": {"POST": "identity"},
}
# Operations whose OpenAPI requestBody is "required: true".
_BODY_REQUIRED = frozenset({"attributes", "events", "subscribe", "unsubscribe"})

MAX_BODY_BYTES = 10 * 1024 * 1024
_READ_LIMIT = 256 * 1024  # max header block size

_REASONS = {
    100: "Continue",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)
_JSON = "application/json"


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, keep_alive: bool
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class _Reply:
    """An HTTP answer, or ``abort=True`` to reset the connection without answering."""

    __slots__ = ("abort", "body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str | None = _JSON,
        headers: Iterable[tuple[str, str]] = (),
        abort: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.abort = abort


_ABORT = _Reply(abort=True)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EmulatorServer:
    """The asyncio server: owns the :class:`EmulatorState` and serves it on one event loop.

    Use :class:`Emulator` from synchronous code; use this directly inside a running loop.
    """

    def __init__(
        self,
        keys: Mapping[str, KeySpec] | None = None,
        limits: Mapping[str, int] | None = None,
        faults: FaultConfig | Mapping[str, Any] | None = None,
        sign_up_sources: Mapping[str, str] | None = None,
        sign_up_units: Iterable[Mapping[str, str]] | None = None,
        log_requests: bool = False,
    ) -> None:
        self.state = EmulatorState(
            keys=keys, limits=limits, sign_up_sources=sign_up_sources, sign_up_units=sign_up_units
        )
        if faults is not None and not isinstance(faults, FaultConfig):
            faults = FaultConfig.from_mapping(faults)
        self.faults = FaultInjector(faults)
        self.validator: RequestValidator = get_request_validator()
        self.log_requests = log_requests
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        # Monotonic-ish ids make it easy to correlate an error body with the request log.
        self._error_ids = itertools.count(int(time.time() * 1000) % 10**9)
        self.host = ""
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and start accepting; returns the bound port (useful with ``port=0``)."""
        self._server = await asyncio.start_server(
            self._handle_connection, host, port, limit=_READ_LIMIT, backlog=1024, reuse_address=True
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
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

    # -- HTTP plumbing ------------------------------------------------------------------------

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        transport = writer.transport
        try:
            while True:
                try:
                    request = await self._read_request(reader, writer)
                except _BadRequest as exc:
                    writer.write(self._render(self._error(exc.status, exc.message), keep_alive=False))
                    await writer.drain()
                    break
                if request is None:
                    break
                try:
                    reply = await self._dispatch(request)
                except Exception as exc:
                    # An emulator bug should surface as a readable 500, not a silent disconnect.
                    log.exception("emulator failed on %s %s", request.method, request.path)
                    reply = self._error(500, f"emulator internal error: {type(exc).__name__}: {exc}")
                if reply.abort:
                    transport.abort()
                    return
                writer.write(self._render(reply, request.keep_alive))
                await writer.drain()
                if not request.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Shutdown: do not linger on half-open or hung connections. Not re-raised: this is a
            # top-level connection task and asyncio.streams would log the cancellation as an error.
            transport.abort()
        finally:
            if task is not None:
                self._connections.discard(task)
            if not transport.is_closing():
                transport.close()

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _BadRequest(400, "incomplete request head") from None
            return None
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, "request head too large") from None
        lines = head[:-4].decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise _BadRequest(400, f"malformed request line {lines[0][:100]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(400, "malformed header line")
            headers[name.strip().lower()] = value.strip()
        conn = headers.get("connection", "").lower()
        keep_alive = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked(reader)
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _BadRequest(400, "invalid Content-Length") from None
            if length < 0:
                raise _BadRequest(400, "invalid Content-Length")
            if length > MAX_BODY_BYTES:
                raise _BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
            body = await reader.readexactly(length) if length else b""
        path, _, query = target.partition("?")
        return _Request(method.upper(), path, query, headers, body, keep_alive)

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "malformed chunk size") from None
            if size == 0:
                # Trailers, if any, end with an empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    @staticmethod
    def _render(reply: _Reply, keep_alive: bool) -> bytes:
        body = reply.body
        head = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}\r\nContent-Length: {len(body)}\r\n"
        if reply.content_type and body:
            head += f"Content-Type: {reply.content_type}\r\n"
        for name, value in reply.headers:
            head += f"{name}: {value}\r\n"
        if not keep_alive:
            head += "Connection: close\r\n"
        return (head + "Server: attentive-emulator\r\n\r\n").encode("latin-1") + body

    def _error(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> _Reply:
        body = _dumps({"error": {"id": next(self._error_ids), "message": message}})
        return _Reply(status, body, _JSON, headers)

    # -- dispatch -----------------------------------------------------------------------------

    async def _dispatch(self, req: _Request) -> _Reply:
        if req.path.startswith("/_emulator/") or req.path == "/_emulator":
            try:
                return self._control(req)
            except _BadRequest as exc:
                return self._error(exc.status, exc.message)
            except ValueError as exc:
                return self._error(400, str(exc))
        if req.path.startswith("/v1/") or req.path == "/v1":
            return await self._api(req)
        return self._error(404, f"no route for {req.method} {req.path}; the API lives under /v1")

    async def _api(self, req: _Request) -> _Reply:
        state = self.state
        now = time.monotonic()
        received_at = time.time()
        methods = API_ROUTES.get(req.path)
        endpoint = methods.get(req.method) if methods else None
        if endpoint is None:
            # Not an endpoint: no key bucket to charge, so report the default limit untouched.
            state.not_found += 1
            rl = _rl_headers(DEFAULT_LIMIT, DEFAULT_LIMIT)
            if methods:
                allow = ("Allow", ", ".join(sorted(methods)))
                return self._error(405, f"{req.method} is not allowed on {req.path}", (*rl, allow))
            return self._error(404, f"{req.method} {req.path} is not an emulated Attentive v1 endpoint", rl)
        decision = self.faults.decide(endpoint)

        stats = state.endpoint_stats[endpoint]
        stats.requests += 1
        stats.arrivals.add(now)
        key = _bearer(req.headers.get("authorization"))
        entry: dict[str, Any] = {
            "endpoint": endpoint,
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "status": None,
            "received_at": received_at,
            "key": mask_key(key) if key else None,
            "body": req.body,
        }
        state.request_log.append(entry)

        if decision.kind is not None and decision.kind != "drop_after_apply":
            # The request never reaches "Attentive": nothing is applied or counted in the limiter.
            return await self._fault(decision, endpoint, key, now, entry)

        # Auth and rate limiting are decided at arrival so injected latency cannot reorder the window.
        limit = state.limiter.limit(endpoint)
        spec = state.keys.get(key) if key else None
        scope = ENDPOINT_SCOPES[endpoint]
        reply: _Reply | None = None
        if spec is None:
            rl = _rl_headers(limit, limit)
            msg = "missing bearer token in Authorization header" if not key else "invalid or revoked API key"
            reply = self._error(401, msg, rl)
        elif scope is not None and scope not in spec.scopes:
            assert key is not None
            rl = _rl_headers(limit, state.limiter.remaining(key, endpoint, now))
            reply = self._error(403, f"API key lacks the {scope!r} scope required by {req.method} {req.path}", rl)
        else:
            assert key is not None
            accepted, remaining = state.limiter.acquire(key, endpoint, now)
            rl = _rl_headers(limit, remaining)
            if accepted:
                stats.accepted.add(now)
            else:
                stats.rate_limited += 1
                reply = self._error(429, f"rate limit of {limit} requests per second exceeded for {endpoint}", rl)

        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if reply is None:
            assert spec is not None
            try:
                status, payload = self._apply(endpoint, req, spec, received_at)
            except ApiError as exc:
                reply = self._error(exc.status, exc.message, rl)
            else:
                body = b"" if payload is None else _dumps(payload)
                reply = _Reply(status, body, _JSON if payload is not None else None, rl)

        entry["status"] = reply.status
        if decision.kind == "drop_after_apply":
            stats.faults["drop_after_apply"] += 1
            entry["fault"] = "drop_after_apply"
            self._log(entry)
            return _ABORT
        stats.status[reply.status] += 1
        self._log(entry)
        return reply

    async def _fault(
        self, decision: FaultDecision, endpoint: str, key: str | None, now: float, entry: dict[str, Any]
    ) -> _Reply:
        state = self.state
        stats = state.endpoint_stats[endpoint]
        kind = decision.kind
        assert kind is not None
        stats.faults[kind] += 1
        entry["fault"] = kind
        self._log(entry)
        if kind == "hang":
            await asyncio.sleep(self.faults.config.hang_s)
            return _ABORT
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if kind == "drop":
            return _ABORT
        limit = state.limiter.limit(endpoint)
        remaining = state.limiter.remaining(key, endpoint, now) if key is not None and key in state.keys else limit
        rl = _rl_headers(limit, remaining)
        if kind == "non_json":
            entry["status"] = 502
            stats.status[502] += 1
            return _Reply(502, _HTML_502, "text/html", rl)
        entry["status"] = decision.error_status
        stats.status[decision.error_status] += 1
        return self._error(decision.error_status, "injected fault: upstream service error", rl)

    def _apply(self, endpoint: str, req: _Request, spec: KeySpec, received_at: float) -> tuple[int, Any]:
        state = self.state
        if endpoint == "me":
            return 200, spec.me()
        if endpoint in ("subscriptions_read", "attributes_read"):
            params = parse_qs(req.query, keep_blank_values=True)
            phone = params["phone"][0] if "phone" in params else None
            email = params["email"][0] if "email" in params else None
            if endpoint == "subscriptions_read":
                return state.get_subscriptions(phone, email)
            return state.get_attributes(phone, email)
        body = self._json_body(endpoint, req.body)
        if endpoint == "attributes":
            return state.post_attributes(body)
        if endpoint == "events":
            return state.post_event(body, received_at)
        if endpoint == "subscribe":
            return state.post_subscribe(body, spec.company_name)
        if endpoint == "unsubscribe":
            return state.post_unsubscribe(body, spec.company_name)
        if endpoint == "identity":
            return state.post_identity(body, received_at)
        raise AssertionError(f"unhandled endpoint {endpoint}")  # pragma: no cover

    def _json_body(self, endpoint: str, raw: bytes) -> Any:
        if not raw.strip():
            if endpoint in _BODY_REQUIRED:
                raise ApiError(400, "request body is required (JSON object)")
            raw = b"{}"
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"malformed JSON body: {exc}") from None
        problem = self.validator.validate(endpoint, body)
        if problem is not None:
            raise ApiError(400, problem)
        return body

    def _log(self, entry: Mapping[str, Any]) -> None:
        if self.log_requests or log.isEnabledFor(logging.DEBUG):
            log.log(
                logging.INFO if self.log_requests else logging.DEBUG,
                "%s %s -> %s%s key=%s",
                entry["method"],
                entry["path"],
                entry["status"],
                f" fault={entry['fault']}" if entry.get("fault") else "",
                entry["key"],
            )

    # -- control routes -----------------------------------------------------------------------

    def _control(self, req: _Request) -> _Reply:
        state = self.state
        route = req.path[len("/_emulator") :].rstrip("/") or "/"
        method = req.method
        if method == "GET":
            params = parse_qs(req.query)
            if route in ("/", "/health"):
                return _ok({"status": "ok", "url": self.url})
            if route == "/stats":
                return _ok(state.stats())
            if route == "/attributes":
                return _ok(state.attributes)
            if route == "/events":
                return _ok(state.events)
            if route == "/subscriptions":
                return _ok(state.subscriptions_dict())
            if route == "/messages":
                return _ok(state.messages)
            if route == "/identities":
                return _ok(state.identities)
            if route == "/opted_out":
                return _ok({"phones": sorted(state.opted_out)})
            if route == "/enumerated_attributes":
                return _ok(state.enumerated_attributes)
            if route == "/keys":
                return _ok({mask_key(k): spec.to_dict() for k, spec in state.keys.items()})
            if route == "/limits":
                return _ok(dict(state.limiter.limits))
            if route == "/faults":
                return _ok(self.faults.config.to_dict())
            if route == "/sign_up":
                return _ok({"sources": state.sign_up_sources, "units": state.sign_up_units})
            if route == "/requests":
                return _ok(self._requests(params))
        elif method in ("POST", "DELETE"):
            data = _control_body(req.body)
            if method == "DELETE" and route == "/keys":
                key = data.get("key")
                if not isinstance(key, str):
                    raise _BadRequest(400, "body must contain the 'key' to remove")
                return _ok({"removed": state.remove_key(key), "key": mask_key(key)})
            if method == "DELETE":
                raise _BadRequest(404, f"no control route {method} {req.path}")
            if route == "/reset":
                state.reset()
                self.faults.configure(FaultConfig())
                return _ok({"reset": True})
            elif route == "/keys":
                key, scopes = data.get("key"), data.get("scopes", list(ALL_SCOPES))
                if not isinstance(key, str) or not key:
                    raise _BadRequest(400, "'key' must be a non-empty string")
                if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                    raise _BadRequest(400, "'scopes' must be a list of scope strings")
                spec = KeySpec(
                    scopes=scopes,
                    company_name=str(data.get("company_name") or "Emulated Co"),
                    application_name=str(data.get("application_name") or "Attentive Emulator"),
                )
                state.add_key(key, spec)
                return _ok({"key": mask_key(key), **spec.to_dict()})
            elif route == "/faults":
                cfg = FaultConfig.from_mapping(data)
                self.faults.configure(cfg)
                return _ok(cfg.to_dict())
            elif route == "/limits":
                return _ok(state.set_limits(data))
            elif route == "/enumerated_attributes":
                try:
                    return _ok(state.set_enumerated_attributes(data))
                except ValueError as exc:
                    raise _BadRequest(400, str(exc)) from None
            elif route == "/opted_out":
                phones = data.get("phones")
                if not isinstance(phones, list):
                    raise _BadRequest(400, "body must be {'phones': [...]}")
                try:
                    state.seed_opted_out(phones)
                except ApiError as exc:
                    raise _BadRequest(400, exc.message) from None
                return _ok({"phones": sorted(state.opted_out)})
            elif route == "/sign_up":
                if "sources" in data:
                    state.sign_up_sources = validate_sign_up_sources(data["sources"])
                if "units" in data:
                    state.sign_up_units = validate_sign_up_units(data["units"])
                return _ok({"sources": state.sign_up_sources, "units": state.sign_up_units})
        raise _BadRequest(404, f"no control route {method} {req.path}")

    def _requests(self, params: Mapping[str, list[str]]) -> list[dict[str, Any]]:
        endpoint = params.get("endpoint", [None])[0]
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise _BadRequest(400, f"unknown endpoint {endpoint!r}; known: {list(ENDPOINTS)}")
        try:
            limit = int(params["limit"][0]) if "limit" in params else None
        except ValueError:
            raise _BadRequest(400, "limit must be an integer") from None
        entries = [e for e in self.state.request_log if endpoint is None or e["endpoint"] == endpoint]
        if limit is not None:
            entries = entries[-limit:] if limit > 0 else []
        return [{**e, "body": _decode_body(e["body"])} for e in entries]


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _rl_headers(limit: int, remaining: int) -> tuple[tuple[str, str], ...]:
    return (("x-ratelimit-limit", str(limit)), ("x-ratelimit-remaining", str(remaining)))


def _ok(obj: Any) -> _Reply:
    return _Reply(200, _dumps(obj))


def _control_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _BadRequest(400, f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise _BadRequest(400, "control request body must be a JSON object")
    return data


def _decode_body(raw: bytes) -> Any:
    # The log keeps raw bytes so the hot path never copies bodies; decode only on inspection.
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")


# ----------------------------------------------------------------------------------------------
# Synchronous facade
# ----------------------------------------------------------------------------------------------


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

    ``keys`` defaults to ``{"test-key": KeySpec()}`` (all scopes). Use as a context manager
    or call :meth:`start` / :meth:`stop`. ``url`` is the base URL without ``/v1``.
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
