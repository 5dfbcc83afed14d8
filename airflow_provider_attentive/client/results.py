"""Downloading a finished bulk job's results: the ``.jsonl`` file behind a pre-signed link.

The link in ``GET /v2/bulk/job/{id}`` may point at object storage on another host, and its query string is
the credential (anyone holding the whole link can read the file). So the download never goes through the
API transport: it uses its own httpx client that never had the ``Authorization`` header, keeps no cookies,
ignores the environment (no ``.netrc`` credentials, no proxy settings), follows no redirect, and never
prints the query string in a log line or an error.
"""

from __future__ import annotations

import functools
import http.cookiejar
import logging
import random
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator

import httpx

from airflow_provider_attentive import __version__
from airflow_provider_attentive.client.config import check_plain_http
from airflow_provider_attentive.client.redact import install_httpx_filter, url_without_query
from airflow_provider_attentive.client.retry import RetryPolicy

__all__ = ["DEFAULT_MAX_BYTES", "ResultsDownloadError", "check_results_url", "download_results"]

log = logging.getLogger(__name__)

# httpx logs the full URL of every request at INFO; the filter drops signed query strings from it.
install_httpx_filter()

# A bulk job holds at most 256 users (or 10,000 segment members), a few hundred bytes of results each:
# 64 MiB is far above any real file and still small enough to refuse a runaway body.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Statuses that say the link itself is no longer (or never was) good: asking again gives the same answer.
_EXPIRED = frozenset({401, 403, 404, 410})


class ResultsDownloadError(Exception):
    """The results could not be downloaded. ``final`` is True when retrying later cannot help.

    The message names the link without its query string; ``status`` is the HTTP status, if one came back.
    """

    def __init__(self, message: str, *, final: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.final = final
        self.status = status


def check_results_url(url: str, *, allow_insecure_http: bool = False) -> None:
    """Refuse a link that is not ``https://`` (plain ``http://`` only to a loopback host, the emulator).

    ``allow_insecure_http`` also accepts ``http://`` to any host, as the connection extra of that name does
    for an emulator inside a private network. A link with a user name or password is refused too: httpx
    would turn it into an ``Authorization`` header.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("the bulk job results link is empty")
    safe = url_without_query(url)
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError:
        raise ValueError(f"the bulk job results link {safe!r} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if not host or scheme not in ("http", "https"):
        raise ValueError(f"the bulk job results link {safe!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"refusing the bulk job results link {safe!r}: it carries credentials")
    check_plain_http(
        scheme,
        host,
        allow_insecure_http=allow_insecure_http,
        refusal=(
            f"refusing to download bulk job results over plain http:// from {safe!r}: the link's signature "
            "would travel unencrypted. Only https:// is accepted, or http:// to a loopback host (an emulator)"
        ),
        warning=f"allow_insecure_http: downloading bulk job results over plain http:// from {safe}",
    )


class _Scrubber:
    """Removes the link's query string from any text, for messages built from exceptions."""

    def __init__(self, url: str) -> None:
        self._query = urllib.parse.urlsplit(url).query

    def __call__(self, text: str) -> str:
        return text.replace(self._query, "<redacted>") if self._query else text


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building one loads the CA bundle (tens of milliseconds): shared by every download of the process.
    return httpx.create_ssl_context()


def _no_cookies() -> http.cookiejar.CookieJar:
    # An empty allow-list refuses every cookie, so a Set-Cookie on one attempt is never sent on the next.
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def download_results(
    url: str,
    *,
    timeout: float = 30.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_attempts: int = 4,
    backoff_base_s: float = 0.5,
    backoff_max_s: float = 10.0,
    allow_insecure_http: bool = False,
    user_agent: str = f"airflow-provider-attentive/{__version__}",
    proxy: str | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> Iterator[str]:
    """Stream the results file at ``url`` line by line (UTF-8 text without the line break; blank lines skipped).

    The link is checked here, before anything is sent (see :func:`check_results_url`); the download starts
    when the first line is asked for. Network errors, 408, 429 and 5xx are retried up to ``max_attempts``
    with jittered backoff; a retry skips the bytes already handed out, so no line is yielded twice. A
    401/403/404/410 (the link expired) or any other answer than 200 is final: a
    :class:`ResultsDownloadError` with ``final=True``. A body over ``max_bytes`` stops the download with a
    final error. ``proxy`` is the connection's own proxy (``TransportConfig.proxy``), the only one used: the
    environment's proxy settings are ignored like its credentials. ``transport`` replaces the network (tests).
    """
    check_results_url(url, allow_insecure_http=allow_insecure_http)
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be at least 1, got {max_bytes!r}")
    policy = RetryPolicy(max_attempts=max_attempts, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s)

    def client() -> httpx.Client:
        # Made for this download alone and never given the API's headers: nothing of the API key can leak.
        return httpx.Client(
            verify=_ssl_context(),
            headers={"User-Agent": user_agent, "Accept": "*/*"},
            cookies=_no_cookies(),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            proxy=proxy,
            transport=transport,
        )

    return _stream(client, url.strip(), max_bytes, policy, sleep, rng or random.Random())


class _Position:
    """How far the consumer has got: bytes of the body already yielded as whole lines."""

    __slots__ = ("handed_out",)

    def __init__(self) -> None:
        self.handed_out = 0


def _stream(
    make_client: Callable[[], httpx.Client],
    url: str,
    max_bytes: int,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    rng: random.Random,
) -> Iterator[str]:
    safe = url_without_query(url)
    scrub = _Scrubber(url)
    position = _Position()
    etag: str | None = None
    attempt = 0
    with make_client() as client:
        while True:
            attempt += 1
            log.info("Downloading bulk job results from %s (attempt %d)", safe, attempt)
            try:
                with client.stream("GET", url) as response:
                    error = _status_error(safe, response.status_code)
                    if error is None:
                        etag = _check_same_file(safe, etag, response.headers.get("etag"))
                        _check_length(safe, response.headers.get("content-length"), max_bytes)
                        yield from _lines(response, safe, max_bytes, position)
                        return
            except httpx.TransportError as exc:
                # Also raised half-way through the body: the next attempt resumes after the last whole line.
                error = ResultsDownloadError(
                    f"downloading bulk job results from {safe} failed: {type(exc).__name__}: {scrub(str(exc))}",
                    final=False,
                )
            if error.final:
                raise error
            if attempt >= policy.max_attempts:
                raise ResultsDownloadError(f"{error} (gave up after {attempt} attempts)", final=False)
            delay = policy.backoff_s(attempt, rng)
            log.warning("%s; retrying in %.1f s", error, delay)
            sleep(delay)


def _status_error(safe: str, status: int) -> ResultsDownloadError | None:
    """None for a 200; else the error that status means (retryable for 408, 429 and 5xx)."""
    if status == 200:
        return None
    prefix = f"downloading bulk job results from {safe}: HTTP {status}"
    if 300 <= status < 400:
        # A redirect could lead anywhere (and a signed link has no business redirecting): not followed.
        return ResultsDownloadError(f"{prefix} is a redirect, which is not followed", final=True, status=status)
    if status in _EXPIRED:
        return ResultsDownloadError(
            f"{prefix}: the link has expired or is not valid (results are kept two weeks); "
            "ask for the job status again for a fresh link",
            final=True,
            status=status,
        )
    if status in (408, 429) or status >= 500:
        return ResultsDownloadError(prefix, final=False, status=status)
    return ResultsDownloadError(prefix, final=True, status=status)


def _check_same_file(safe: str, earlier: str | None, now: str | None) -> str | None:
    # A retry resumes by skipping bytes already read, which is only right if the file is the same one.
    if earlier is not None and now is not None and earlier != now:
        raise ResultsDownloadError(
            f"the bulk job results at {safe} changed between attempts (ETag {earlier} -> {now})", final=True
        )
    return now if now is not None else earlier


def _check_length(safe: str, header: str | None, max_bytes: int) -> None:
    try:
        length = int(header) if header is not None else None
    except ValueError:
        return
    if length is not None and length > max_bytes:
        raise ResultsDownloadError(_too_big(safe, max_bytes, f"{length} bytes announced"), final=True)


def _too_big(safe: str, max_bytes: int, detail: str) -> str:
    return f"the bulk job results at {safe} are larger than the {max_bytes}-byte limit ({detail})"


def _lines(response: httpx.Response, safe: str, max_bytes: int, position: _Position) -> Iterator[str]:
    """Split the body into lines, skipping the first ``position.handed_out`` bytes (already yielded)."""
    seen = 0  # bytes of this answer's (decoded) body read so far
    buffer = bytearray()
    for chunk in response.iter_bytes():
        start = seen
        seen += len(chunk)
        if seen > max_bytes:
            raise ResultsDownloadError(_too_big(safe, max_bytes, f"more than {max_bytes} bytes read"), final=True)
        if seen <= position.handed_out:
            continue
        buffer += chunk[max(0, position.handed_out - start) :]
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            position.handed_out += end + 1
            text = line.decode("utf-8", errors="replace").rstrip("\r")
            if text.strip():
                yield text
    if buffer:
        position.handed_out += len(buffer)
        text = bytes(buffer).decode("utf-8", errors="replace").rstrip("\r")
        if text.strip():
            yield text
