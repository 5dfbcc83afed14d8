"""Downloading bulk job results: no credentials sent, https-or-loopback, no redirects, bounded, retried, redacted."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_attentive.client.results import ResultsDownloadError, download_results
from tests.helpers.stub_server import StubReply, StubServer

SIGNATURE = "f00dfacecafe5157"
QUERY = f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature={SIGNATURE}"
BODY = '{"request": {"phone": "+1"}, "response": {"status": 200}}\n\n{"second": 2}\r\n{"third": 3}'
LINES = ['{"request": {"phone": "+1"}, "response": {"status": 200}}', '{"second": 2}', '{"third": 3}']


def link(base: str) -> str:
    return f"{base}/results/job-1.jsonl?{QUERY}"


def no_sleep(_: float) -> None:
    pass


def fetch(url: str, **kwargs: Any) -> list[str]:
    return list(download_results(url, sleep=no_sleep, **kwargs))


def test_lines_come_back_without_any_credential_sent(stub_server: StubServer) -> None:
    stub_server.script(StubReply(200, BODY))
    assert fetch(link(stub_server.url)) == LINES
    (request,) = stub_server.requests
    assert request.path == f"/results/job-1.jsonl?{QUERY}"
    headers = {name.lower() for name in request.headers}
    assert "authorization" not in headers and "cookie" not in headers and "proxy-authorization" not in headers
    assert request.headers["User-Agent"].startswith("airflow-provider-attentive/")


def test_netrc_credentials_are_ignored(stub_server: StubServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would fail the download if it were used
    stub_server.script(StubReply(200, BODY))
    assert fetch(link(stub_server.url)) == LINES
    assert "Authorization" not in stub_server.requests[0].headers


def test_a_cookie_set_on_one_attempt_is_not_sent_on_the_next(stub_server: StubServer) -> None:
    stub_server.script(StubReply(503, "busy", {"Set-Cookie": "session=s3cr3t; Path=/"}), StubReply(200, BODY))
    assert fetch(link(stub_server.url)) == LINES
    assert [r.headers.get("Cookie") for r in stub_server.requests] == [None, None]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"http://results.example.test/j.jsonl?{QUERY}", "plain http://"),
        (f"http://10.0.0.5/j.jsonl?{QUERY}", "plain http://"),
        (f"ftp://results.example.test/j.jsonl?{QUERY}", r"not an http\(s\) URL"),
        (f"file:///etc/passwd?{QUERY}", r"not an http\(s\) URL"),
        (f"https://user:pw@results.example.test/j.jsonl?{QUERY}", "carries credentials"),
        (f"https://results.example.test:99999/j.jsonl?{QUERY}", "not a valid URL"),
        ("", "empty"),
    ],
)
def test_links_that_are_not_https_or_loopback_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        download_results(url)  # refused at the call, before any request
    assert SIGNATURE not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)
    assert "pw@" not in str(info.value)


def test_https_and_loopback_http_are_accepted() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.copy_with(query=None)))
        return httpx.Response(200, content=b"{}\n")

    mock = httpx.MockTransport(answer)
    for url in ("https://bucket.s3.amazonaws.com/j.jsonl", "http://localhost:1/j", "http://[::1]:1/j"):
        assert fetch(f"{url}?{QUERY}", transport=mock) == ["{}"]
    assert seen == ["https://bucket.s3.amazonaws.com/j.jsonl", "http://localhost:1/j", "http://[::1]:1/j"]


def test_allow_insecure_http_accepts_an_emulator_in_a_private_network(caplog: pytest.LogCaptureFixture) -> None:
    mock = httpx.MockTransport(lambda request: httpx.Response(200, content=b"{}\n"))
    url = f"http://attentive-emulator:8765/j.jsonl?{QUERY}"
    assert fetch(url, transport=mock, allow_insecure_http=True) == ["{}"]
    assert "allow_insecure_http" in caplog.text and SIGNATURE not in caplog.text


def test_redirects_are_not_followed(stub_server: StubServer) -> None:
    stub_server.script(StubReply(302, "", {"Location": f"{stub_server.url}/elsewhere?sig={SIGNATURE}"}))
    with pytest.raises(ResultsDownloadError, match="redirect, which is not followed") as info:
        fetch(link(stub_server.url))
    assert info.value.final and info.value.status == 302
    assert len(stub_server.requests) == 1
    assert SIGNATURE not in str(info.value)


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_an_expired_link_is_final(stub_server: StubServer, status: int) -> None:
    stub_server.script(StubReply(status, "<Error><Code>AccessDenied</Code></Error>"))
    with pytest.raises(ResultsDownloadError, match="expired or is not valid") as info:
        fetch(link(stub_server.url))
    assert info.value.final and info.value.status == status
    assert len(stub_server.requests) == 1


def test_transient_failures_are_retried_with_backoff(stub_server: StubServer) -> None:
    stub_server.script(StubReply(500, "oops"), StubReply(503, "busy"), StubReply(200, BODY))
    delays: list[float] = []
    assert list(download_results(link(stub_server.url), sleep=delays.append, backoff_base_s=0.2)) == LINES
    assert len(stub_server.requests) == 3
    assert len(delays) == 2 and all(0 <= d <= 0.4 for d in delays)


def test_it_gives_up_after_max_attempts(stub_server: StubServer) -> None:
    stub_server.script(StubReply(502, "bad gateway"))
    with pytest.raises(ResultsDownloadError, match=r"HTTP 502.*gave up after 3 attempts") as info:
        fetch(link(stub_server.url), max_attempts=3)
    assert not info.value.final
    assert len(stub_server.requests) == 3


def test_a_network_error_is_retried(closed_port_url: str) -> None:
    with pytest.raises(ResultsDownloadError, match=r"ConnectError.*gave up after 2 attempts") as info:
        fetch(link(closed_port_url), max_attempts=2)
    assert SIGNATURE not in str(info.value)


class _Body(httpx.SyncByteStream):
    """A body sent in ``chunks``, optionally broken off with a network error after them."""

    def __init__(self, chunks: list[bytes], fail: bool = False) -> None:
        self._chunks = chunks
        self._fail = fail

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
        if self._fail:
            raise httpx.ReadError("connection reset by peer")


def test_a_broken_download_resumes_after_the_last_whole_line() -> None:
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, stream=_Body([b'{"n": 1}\n{"n"', b': 2}\n{"n": 3'], fail=True))
        return httpx.Response(200, stream=_Body([b'{"n": 1}\n{"n": 2}\n', b'{"n": 3}\n{"n": 4}\n']))

    lines = fetch(f"https://bucket.example.test/j.jsonl?{QUERY}", transport=httpx.MockTransport(answer))
    assert lines == ['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}']
    assert len(calls) == 2


def test_a_file_that_changed_between_attempts_is_refused() -> None:
    answers = iter(
        [
            httpx.Response(200, headers={"ETag": '"v1"'}, stream=_Body([b"{}\n{"], fail=True)),
            httpx.Response(200, headers={"ETag": '"v2"'}, content=b"{}\n{}\n"),
        ]
    )
    with pytest.raises(ResultsDownloadError, match="changed between attempts") as info:
        fetch("https://bucket.example.test/j.jsonl", transport=httpx.MockTransport(lambda r: next(answers)))
    assert info.value.final


def test_an_announced_body_over_the_cap_is_refused_before_reading() -> None:
    read: list[int] = []

    class Counted(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            read.append(1)
            yield b"x" * 1000

    mock = httpx.MockTransport(lambda r: httpx.Response(200, headers={"Content-Length": "1000"}, stream=Counted()))
    with pytest.raises(ResultsDownloadError, match="larger than the 100-byte limit \\(1000 bytes announced\\)"):
        fetch("https://b.example.test/j", max_bytes=100, transport=mock)
    assert read == []


def test_a_streamed_body_over_the_cap_stops_the_download() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Body([b'{"line": 1}\n' * 10] * 100))  # no Content-Length

    lines: list[str] = []
    with pytest.raises(ResultsDownloadError, match="larger than the 500-byte limit") as info:
        for line in download_results("https://b.example.test/j", max_bytes=500, transport=httpx.MockTransport(answer)):
            lines.append(line)
    assert info.value.final and 0 < len(lines) <= 500 // 12


def test_the_signature_never_reaches_a_log_or_an_error(
    stub_server: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # Airflow's logging setup may have raised httpx's level
    stub_server.script(StubReply(500, "oops"), StubReply(200, BODY))
    assert fetch(link(stub_server.url)) == LINES
    stub_server.script(StubReply(403, "denied"))
    with pytest.raises(ResultsDownloadError) as info:
        fetch(link(stub_server.url))
    assert "HTTP Request: GET" in caplog.text  # httpx's own line is there, with the query redacted
    assert "?<redacted>" in caplog.text
    assert f"{stub_server.url}/results/job-1.jsonl" in caplog.text
    for secret in (SIGNATURE, "AKIAEXAMPLE"):
        assert secret not in caplog.text
        assert secret not in str(info.value)
