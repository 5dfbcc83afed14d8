"""A scripted HTTP server on loopback, for answers the Attentive emulator does not give.

A ``Retry-After`` header, a 403 on ``/v1/me``, a non-JSON 200: :class:`StubServer` answers each request
with the next :class:`StubReply` and records what it received. The ``stub_server`` and ``closed_port_url``
fixtures are imported by the conftest of each test package that uses them.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["StubReply", "StubRequest", "StubServer", "closed_port_url", "stub_server"]


@dataclass
class StubReply:
    """One scripted answer: status, body (JSON, or text/bytes sent as text/plain) and extra headers.

    ``body`` may also be a function of the :class:`StubRequest` received, returning one of those (an answer
    that echoes the request, say).
    """

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StubRequest:
    """One request the stub received, with its arrival time (monotonic)."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class StubServer:
    """Answers each request with the next scripted reply (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: list[StubReply] = [StubReply(200, {})]
        self.requests: list[StubRequest] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                request = StubRequest(time.monotonic(), self.command, self.path, dict(self.headers.items()), body)
                with stub._lock:
                    stub.requests.append(request)
                    reply = stub.replies.pop(0) if len(stub.replies) > 1 else stub.replies[0]
                answer = reply.body(request) if callable(reply.body) else reply.body
                if isinstance(answer, (bytes, str)):
                    payload = answer.encode() if isinstance(answer, str) else answer
                    ctype = "text/plain"
                else:
                    payload = json.dumps(answer).encode()
                    ctype = "application/json"
                self.send_response(reply.status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def script(self, *replies: StubReply) -> None:
        """Answer the next requests with ``replies``, in order (the last one repeats)."""
        with self._lock:
            self.replies = list(replies)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    """A :class:`StubServer` for this test, closed afterwards."""
    server = StubServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
