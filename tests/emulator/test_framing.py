"""HTTP/1.1 framing over a raw socket: chunked bodies, 100-continue, keep-alive, pipelining, bad requests."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from airflow_provider_attentive.emulator import Emulator
from tests.helpers.emulator import PHONE

BODY = json.dumps({"properties": {"a": "1"}, "user": {"phone": PHONE}}).encode()
AUTH = b"Authorization: Bearer test-key\r\n"


@pytest.fixture
def conn(attentive_emulator: Emulator) -> Iterator[socket.socket]:
    host, port = attentive_emulator.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        yield sock


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response from ``sock`` (``buffer`` keeps bytes already read past it)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    buffer[:] = rest[length:]
    return status, headers, rest[:length]


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _post(body: bytes, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return (
        b"POST /v1/attributes/custom " + version + b"\r\nHost: emulator\r\n" + AUTH + extra
        + b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def test_chunked_body_is_reassembled(conn: socket.socket, attentive_emulator: Emulator) -> None:
    chunks = [BODY[:10], BODY[10:]]
    encoded = b"".join(f"{len(c):x};ext=1\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\nX-Trailer: t\r\n\r\n"
    conn.sendall(
        b"POST /v1/attributes/custom HTTP/1.1\r\nHost: emulator\r\n" + AUTH
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + encoded
    )  # fmt: skip
    status, _, _ = _read_response(conn, bytearray())
    assert status == 200
    assert attentive_emulator.client.attributes() == {PHONE: {"a": "1"}}


def test_expect_100_continue_is_answered_before_the_body(conn: socket.socket) -> None:
    head = _post(BODY, b"Expect: 100-continue\r\n")
    conn.sendall(head[: -len(BODY)])
    buffer = bytearray()
    status, _, _ = _read_response(conn, buffer)
    assert status == 100
    conn.sendall(BODY)
    status, _, _ = _read_response(conn, buffer)
    assert status == 200


def test_keep_alive_and_pipelined_requests_are_answered_in_order(conn: socket.socket) -> None:
    me = b"GET /v1/me HTTP/1.1\r\nHost: emulator\r\n" + AUTH + b"\r\n"
    conn.sendall(_post(BODY) + me + b"GET /v1/nope HTTP/1.1\r\nHost: emulator\r\n\r\n")
    buffer = bytearray()
    statuses = [_read_response(conn, buffer)[0] for _ in range(3)]
    assert statuses == [200, 200, 404]
    conn.sendall(me)
    status, headers, body = _read_response(conn, buffer)
    assert status == 200 and "connection" not in headers and json.loads(body)["companyName"] == "Emulated Co"


def test_connection_close_and_http_1_0_close_after_the_answer(attentive_emulator: Emulator) -> None:
    host, port = attentive_emulator.url.removeprefix("http://").rsplit(":", 1)
    requests = [
        b"GET /v1/me HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n" + AUTH + b"\r\n",
        b"GET /v1/me HTTP/1.0\r\n" + AUTH + b"\r\n",
    ]
    for request in requests:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(request)
            status, headers, _ = _read_response(sock, bytearray())
            assert status == 200 and headers["connection"] == "close"
            assert _closed(sock)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /v1/me HTTP/1.0\r\nConnection: keep-alive\r\n" + AUTH + b"\r\n")
        status, headers, _ = _read_response(sock, bytearray())
        assert status == 200 and "connection" not in headers


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (b"NONSENSE\r\n\r\n", 400, "malformed request line"),
        (b"GET /v1/me HTTP/1.1\r\nno colon here\r\n\r\n", 400, "malformed header line"),
        (_post(b"").replace(b"Content-Length: 0", b"Content-Length: ten"), 400, "invalid Content-Length"),
        (_post(b"").replace(b"Content-Length: 0", b"Content-Length: -1"), 400, "invalid Content-Length"),
        (_post(b"").replace(b"Content-Length: 0", b"Content-Length: 10485761"), 413, "larger than"),
        (
            b"POST /v1/attributes/custom HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "malformed chunk size",
        ),
        (b"GET /v1/me HTTP/1.1\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n", 431, "too large"),
    ],
)
def test_unframeable_requests_are_answered_then_closed(
    conn: socket.socket, request_bytes: bytes, status: int, message: str
) -> None:
    conn.sendall(request_bytes)
    got, headers, body = _read_response(conn, bytearray())
    assert got == status
    assert headers["connection"] == "close"
    assert message in json.loads(body)["error"]["message"]
    assert _closed(conn)


def test_half_sent_request_head_is_a_400(conn: socket.socket) -> None:
    conn.sendall(b"GET /v1/me HTTP/1.1\r\nHost: emul")
    conn.shutdown(socket.SHUT_WR)
    status, _, body = _read_response(conn, bytearray())
    assert status == 400 and "incomplete request head" in json.loads(body)["error"]["message"]


def test_client_closing_between_requests_is_quiet(conn: socket.socket, attentive_emulator: Emulator) -> None:
    conn.sendall(b"GET /v1/me HTTP/1.1\r\nHost: emulator\r\n" + AUTH + b"\r\n")
    assert _read_response(conn, bytearray())[0] == 200
    conn.shutdown(socket.SHUT_WR)
    assert _closed(conn)
    assert attentive_emulator.client.health()["status"] == "ok"


def test_drop_fault_resets_the_connection_without_an_answer(conn: socket.socket, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(drop_rate=1.0)
    conn.sendall(_post(BODY))
    assert _closed(conn)
    assert attentive_emulator.client.attributes() == {}
