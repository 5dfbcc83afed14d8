"""HTTP/1.1 framing on asyncio streams: request line, headers, bodies, keep-alive and replies.

Hand-written on purpose: it keeps per-request overhead low enough that the emulator is never
the bottleneck of a sync benchmark, and it lets fault injection do what a framework would not
(reset a connection mid-request). An h11-based framing served about half as many requests
(``benchmarks/emulator_throughput.py --raw``, server at 100% CPU: 2,400 to 3,400 against 4,900 to
5,400 requests/s; in-process, 206 against 76 microseconds of CPU per request).
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Awaitable, Callable, Iterable

__all__ = [
    "ABORT",
    "MAX_BODY_BYTES",
    "READ_LIMIT",
    "BadRequest",
    "Reply",
    "Request",
    "render",
    "serve_connection",
]

MAX_BODY_BYTES = 10 * 1024 * 1024
#: Largest request head (request line and headers) accepted; also the stream reader's buffer limit.
READ_LIMIT = 256 * 1024

# Every status the emulator answers with (the v2 routes add 201, 204, 409, 410 and the 504 fault).
_REASONS = {status.value: status.phrase for status in http.HTTPStatus}


class Request:
    """One parsed request; header names are lower-case, ``body`` is the de-chunked payload."""

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


class Reply:
    """An HTTP answer, or ``abort=True`` to reset the connection without answering."""

    __slots__ = ("abort", "body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str | None = "application/json",
        headers: Iterable[tuple[str, str]] = (),
        abort: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.abort = abort


ABORT = Reply(abort=True)


class BadRequest(Exception):
    """A request that cannot be framed; answered with ``status``, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Respond = Callable[[Request], Awaitable[Reply]]
Reject = Callable[[int, str], Reply]


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, respond: Respond, reject: Reject
) -> None:
    """Answer requests on one connection until the client closes it, asks to, or a reply aborts it.

    ``reject`` builds the answer to an unframeable request, after which the connection closes.
    """
    transport = writer.transport
    try:
        while True:
            try:
                request = await read_request(reader, writer)
            except BadRequest as exc:
                writer.write(render(reject(exc.status, exc.message), keep_alive=False))
                await writer.drain()
                break
            if request is None:
                break
            reply = await respond(request)
            if reply.abort:
                transport.abort()
                return
            writer.write(render(reply, request.keep_alive))
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
        if not transport.is_closing():
            transport.close()


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """The next request on the connection; None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest(400, "incomplete request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request head too large") from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest(400, f"malformed request line {lines[0][:100]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    conn = headers.get("connection", "").lower()
    keep_alive = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise BadRequest(400, "invalid Content-Length") from None
        if length < 0:
            raise BadRequest(400, "invalid Content-Length")
        if length > MAX_BODY_BYTES:
            raise BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        body = await reader.readexactly(length) if length else b""
    path, _, query = target.partition("?")
    return Request(method.upper(), path, query, headers, body, keep_alive)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest(400, "malformed chunk size") from None
        if size == 0:
            # Trailers, if any, end with an empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY_BYTES:
            raise BadRequest(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def render(reply: Reply, keep_alive: bool) -> bytes:
    """The bytes of ``reply``: status line, Content-Length, optional Content-Type, extra headers, body."""
    body = reply.body
    head = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}\r\nContent-Length: {len(body)}\r\n"
    if reply.content_type and body:
        head += f"Content-Type: {reply.content_type}\r\n"
    for name, value in reply.headers:
        head += f"{name}: {value}\r\n"
    if not keep_alive:
        head += "Connection: close\r\n"
    return (head + "Server: attentive-emulator\r\n\r\n").encode("latin-1") + body
