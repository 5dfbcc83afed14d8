"""HTTP transport for the Attentive API: auth headers, throttling, retries and concurrent sends.

Pure Python (no Airflow imports) so the sync engine and its tests can use it without Airflow.

Threading model: each :class:`AttentiveTransport` owns one background thread running an asyncio loop
with up to ``max_concurrency`` keep-alive connections (see :class:`_Engine`). Callers stay synchronous: :meth:`AttentiveTransport.request` blocks
for one answer, and :meth:`AttentiveTransport.send_many` pulls requests lazily from the caller's own
thread (the sync engine writes intents to a thread-bound DB connection while producing them) and
yields results as they complete.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import json
import logging
import math
import queue
import random
import re
import threading
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

import httpx

from airflow_provider_attentive import __version__
from airflow_provider_attentive.hooks.endpoints import ENDPOINTS, Endpoint, get_endpoint
from airflow_provider_attentive.hooks.ratelimit import DEFAULT_REGISTRY, LimiterRegistry, Permit, RateLimiter
from airflow_provider_attentive.hooks.retry import Decision, Outcome, RetryPolicy, RetryState, parse_retry_after

__all__ = [
    "DEFAULT_BASE_URL",
    "RATE_LIMIT_BACKENDS",
    "AttentiveTransport",
    "Outcome",
    "Request",
    "Result",
    "TransportConfig",
    "TransportStats",
    "normalize_base_url",
]

log = logging.getLogger(__name__)


class _RedactIdentifiers(logging.Filter):
    """Masks ``phone=`` and ``email=`` query values in httpx's request log lines.

    httpx logs every request URL at INFO ("HTTP Request: GET .../v1/subscriptions?phone=%2B1415..."), and
    Airflow's task logs keep INFO: without this, each eligibility check would write a phone number in clear.
    """

    _QUERY = re.compile(r"((?:phone|email)=)[^&\s\"']+", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "phone=" in message or "email=" in message:
            record.msg = self._QUERY.sub(r"\1***", message)
            record.args = None
        return True


if not any(isinstance(f, _RedactIdentifiers) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_RedactIdentifiers())

DEFAULT_BASE_URL = "https://api.attentivemobile.com"
RATE_LIMIT_BACKENDS = ("local", "redis", "sql")
_MAX_ERROR_TEXT = 500
# Drop idle connections well before a typical load balancer does (60 s on AWS): reusing one the server
# is closing fails in a way that looks like "the request may have arrived" and would make a
# subscribe IN_DOUBT for nothing.
_KEEPALIVE_S = 15.0
_T = TypeVar("_T")


def _default_limiter(config: TransportConfig, registry: LimiterRegistry | None) -> RateLimiter:
    """The limiter ``config.rate_limit_backend`` asks for, when the caller did not pass one."""
    if config.rate_limit_backend == "local":
        return (registry or DEFAULT_REGISTRY).limiter_for(config.base_url, config.api_key, config.local_rates())
    if config.rate_limit_backend == "redis":
        from airflow_provider_attentive.hooks.shared_limit import RedisRateLimiter

        assert config.rate_limit_redis_url is not None  # checked by TransportConfig
        return RedisRateLimiter(
            config.rate_limit_redis_url,
            base_url=config.base_url,
            api_key=config.api_key,
            rates=config.rates(),
            share=config.rate_limit_share,
        )
    raise ValueError(
        f"rate_limit_backend {config.rate_limit_backend!r} needs a database connection: use AttentiveHook "
        "(connection extra rate_limit_sql_conn_id) or pass limiter=SqlRateLimiter(...)"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_base_url(value: str, *, allow_insecure_http: bool = False) -> str:
    """Turn what a user typed into ``scheme://host[:port][/prefix]`` without a trailing ``/v1``.

    A bare host gets ``https://``. Plain ``http://`` is refused except for loopback hosts (a local
    emulator), because the API key is sent in every request's headers; ``allow_insecure_http`` accepts
    it for any host (an emulator inside a private docker network; never the real API) with a warning.
    """
    raw = (value or "").strip()
    if not raw:
        raise ValueError("the Attentive base URL is empty")
    if "://" not in raw:
        raw = "https://" + raw
    parts = urllib.parse.urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"the Attentive base URL must use https:// (got {scheme}://)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the Attentive base URL must not contain credentials; put the API key in the password")
    if parts.query or parts.fragment:
        raise ValueError("the Attentive base URL must not contain a query string or fragment")
    host = parts.hostname
    if not host:
        raise ValueError(f"the Attentive base URL {value!r} has no host")
    try:
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError as exc:
        raise ValueError(f"the Attentive base URL {value!r} has an invalid port") from exc
    if scheme == "http" and not _is_loopback(host):
        if not allow_insecure_http:
            raise ValueError(
                f"refusing plain http:// for {host}: the API key would travel unencrypted. Use https://; "
                "plain http is only accepted for loopback hosts (127.0.0.1, ::1, localhost), "
                "such as a local emulator, or with the connection extra allow_insecure_http for an emulator "
                "inside a private network"
            )
        log.warning(
            "allow_insecure_http: sending the Attentive API key over plain http:// to %s; only acceptable for an "
            "emulator inside a private network, never for the real API",
            host,
        )
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{scheme}://{parts.netloc}{path}"


@dataclass(frozen=True)
class TransportConfig:
    """Everything an :class:`AttentiveTransport` needs. ``api_key`` is left out of ``repr``.

    ``rate_limits`` overrides Attentive's published limit per endpoint name (see ``ENDPOINTS``), in
    requests per second; fractional values are allowed.

    ``rate_limit_backend`` says where the budget lives: ``"local"`` (this process only, the default),
    ``"redis"`` (shared through ``rate_limit_redis_url``) or ``"sql"`` (shared through a SQL table; the
    caller passes the limiter, see :class:`~airflow_provider_attentive.hooks.shared_limit.SqlRateLimiter`).
    ``rate_limit_share`` (0-1] is the fraction of each limit one process uses on its own: always with
    ``"local"`` (1/N when N tasks share a key through an Airflow pool of N slots), and with a shared
    backend only while that backend is unreachable (default there: 1 / the limiters seen on the key).
    ``allow_insecure_http`` accepts ``http://`` to a non-loopback host (see :func:`normalize_base_url`).
    """

    base_url: str
    api_key: str = field(repr=False)
    rate_limits: Mapping[str, float] = field(default_factory=dict)
    timeout: float = 30.0
    max_attempts: int = 6
    max_concurrency: int = 64
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_throttle_s: float = 600.0
    user_agent: str = f"airflow-provider-attentive/{__version__}"
    rate_limit_backend: str = "local"
    rate_limit_redis_url: str | None = field(default=None, repr=False)
    rate_limit_share: float | None = None
    allow_insecure_http: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "base_url", normalize_base_url(self.base_url, allow_insecure_http=bool(self.allow_insecure_http))
        )
        backend = (self.rate_limit_backend or "local").strip().lower()
        if backend not in RATE_LIMIT_BACKENDS:
            raise ValueError(
                f"rate_limit_backend must be one of {', '.join(RATE_LIMIT_BACKENDS)}, got {self.rate_limit_backend!r}"
            )
        object.__setattr__(self, "rate_limit_backend", backend)
        url = (self.rate_limit_redis_url or "").strip() or None
        if backend == "redis" and url is None:
            raise ValueError("rate_limit_backend 'redis' needs rate_limit_redis_url (e.g. redis://redis:6379/2)")
        object.__setattr__(self, "rate_limit_redis_url", url)
        if self.rate_limit_share is not None:
            share = float(self.rate_limit_share)
            if not 0 < share <= 1:
                raise ValueError(f"rate_limit_share must be a fraction in (0, 1], got {self.rate_limit_share!r}")
            object.__setattr__(self, "rate_limit_share", share)
        key = self.api_key.strip() if isinstance(self.api_key, str) else ""
        if not key:
            raise ValueError("the Attentive API key is empty")
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in key):
            # Checked here because httpx would echo the whole header value in its error message.
            raise ValueError("the Attentive API key contains whitespace or control characters")
        object.__setattr__(self, "api_key", key)
        rates: dict[str, float] = {}
        for name, rate in dict(self.rate_limits).items():
            if name not in ENDPOINTS:
                raise ValueError(f"rate_limits: unknown endpoint {name!r}; expected one of {sorted(ENDPOINTS)}")
            rate = float(rate)
            if not rate > 0 or rate == float("inf"):
                raise ValueError(f"rate_limits[{name!r}] must be a positive number, got {rate!r}")
            rates[name] = rate
        object.__setattr__(self, "rate_limits", MappingProxyType(rates))
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts!r}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {self.max_concurrency!r}")

    def rate_for(self, endpoint_name: str) -> float:
        """Requests per second allowed on ``endpoint_name``: the override or Attentive's default."""
        return self.rate_limits.get(endpoint_name, get_endpoint(endpoint_name).default_rate)

    def rates(self) -> dict[str, float]:
        """:meth:`rate_for` of every endpoint: the whole key's budget, for a shared limiter."""
        return {name: self.rate_for(name) for name in ENDPOINTS}

    def local_rates(self) -> dict[str, float]:
        """What the in-process limiter enforces: :meth:`rates` times ``rate_limit_share`` (if set)."""
        share = self.rate_limit_share if self.rate_limit_share is not None else 1.0
        return {name: rate * share for name, rate in self.rates().items()}


@dataclass(frozen=True)
class Request:
    """One request for :meth:`AttentiveTransport.send_many`; ``key`` is echoed back in its Result."""

    key: Any
    body: Any = None
    params: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Result:
    """How one request ended.

    ``attempts`` counts tries that got an answer other than 429 or hit a network error; ``throttled``
    counts 429 answers. ``error`` is a readable message (Attentive's own message for 4xx) and never
    contains the API key.
    """

    key: Any
    endpoint: str
    outcome: Outcome
    status: int | None
    body: Any
    error: str | None
    attempts: int
    throttled: int
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """True if Attentive accepted the request."""
        return self.outcome is Outcome.OK


class TransportStats:
    """Cumulative, thread-safe counters for one transport."""

    _FIELDS = (
        "requests_sent",
        "retries",
        "throttled",
        "network_errors",
        "succeeded",
        "rejected",
        "failed",
        "in_doubt",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self._FIELDS, 0)

    def add(self, **deltas: int) -> None:
        """Increase counters by name."""
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of all counters, plus ``failures`` (results that did not end OK)."""
        with self._lock:
            counts = dict(self._counts)
        counts["failures"] = counts["rejected"] + counts["failed"] + counts["in_doubt"]
        return counts

    @property
    def requests_sent(self) -> int:
        """HTTP requests put on the wire, retries and throttled ones included."""
        return self.snapshot()["requests_sent"]

    @property
    def retries(self) -> int:
        """Requests sent again after a 5xx, 408 or network error."""
        return self.snapshot()["retries"]

    @property
    def throttled(self) -> int:
        """429 answers received."""
        return self.snapshot()["throttled"]

    @property
    def failures(self) -> int:
        """Results that ended REJECTED, FAILED or IN_DOUBT."""
        return self.snapshot()["failures"]

    def __repr__(self) -> str:
        return f"TransportStats({self.snapshot()})"


def _attentive_message(body: Any) -> str | None:
    """Attentive's error text from ``{"error": {"message": ...}}`` and the other shapes seen in the wild."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            if msg:
                return str(msg)
        elif isinstance(err, str) and err:
            return err
        for name in ("message", "detail", "title"):
            if body.get(name):
                return str(body[name])
        return json.dumps(body)[:_MAX_ERROR_TEXT]
    if isinstance(body, str):
        return body.strip()[:_MAX_ERROR_TEXT] or None
    if body is None:
        return None
    return json.dumps(body)[:_MAX_ERROR_TEXT]


def _parse_body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    text = response.text
    ctype = response.headers.get("content-type", "")
    if "json" in ctype or text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _header_int(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def _trace_extension(permit: Permit | None) -> dict[str, Any]:
    """An httpcore ``trace`` hook that tells the limiter when the request body has been written.

    That moment, after any connection set-up, is the closest we can observe to when Attentive counts
    the request. A permit may also have an ``async before_send()``: it is awaited just before the request
    headers are written (after any connection set-up), so a limiter can hold back a request that would
    otherwise go out too late for its slot (the SQL backend does).
    """
    if permit is None:
        return {}
    before_send = getattr(permit, "before_send", None)

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            permit.sent()
        elif before_send is not None and event.endswith("send_request_headers.started"):
            await before_send()

    return {"trace": trace}


class _Engine:
    """The loop thread, HTTP connections and concurrency gate behind one transport.

    Each in-flight request borrows a *lane*: an ``httpx.AsyncClient`` limited to one keep-alive
    connection. httpcore 1.0's shared pool rescans every connection for every queued request and
    hands one idle connection to several requests at once, which at 150 requests/s over dozens of
    connections burned ~10 ms of CPU per request and delayed sends by hundreds of milliseconds
    (enough to break the rate limiter's timing). With one connection per lane that bookkeeping is
    constant-time; up to ``max_concurrency`` lanes (and so connections) are kept alive.

    Kept apart from :class:`AttentiveTransport` so a ``weakref.finalize`` can shut it down when a
    transport is dropped without ``close()``.
    """

    def __init__(self, config: TransportConfig, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._config = config
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()
        self.semaphore: asyncio.Semaphore
        # Coroutine functions awaited on the loop at shutdown (a shared limiter's per-loop clients).
        self.on_shutdown: list[Callable[[], Awaitable[Any]]] = []
        self._idle: list[httpx.AsyncClient] = []
        self._lanes: list[httpx.AsyncClient] = []
        # One TLS context for all lanes: building one loads the CA bundle, which takes milliseconds.
        self._ssl_context = httpx.create_ssl_context()
        self.submit(self._setup()).result()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    async def _setup(self) -> None:
        self.semaphore = asyncio.Semaphore(self._config.max_concurrency)

    def _new_lane(self) -> httpx.AsyncClient:
        config = self._config
        client = httpx.AsyncClient(
            base_url=config.base_url,
            headers={
                "Authorization": f"Bearer {config.api_key}",
                "User-Agent": config.user_agent,
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
            timeout=httpx.Timeout(config.timeout),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=_KEEPALIVE_S),
            verify=self._ssl_context,
            follow_redirects=False,
        )
        self._lanes.append(client)
        return client

    @contextlib.asynccontextmanager
    async def lane(self) -> AsyncIterator[httpx.AsyncClient]:
        """Wait for a free concurrency slot and lend a client with (at most) one connection."""
        async with self.semaphore:
            # Most recently used first, so a lightly loaded transport keeps few connections warm.
            client = self._idle.pop() if self._idle else self._new_lane()
            try:
                yield client
            finally:
                self._idle.append(client)

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for callback in self.on_shutdown:
            try:
                await asyncio.wait_for(callback(), timeout=5)
            except Exception:
                log.debug("error while closing the rate limiter", exc_info=True)
        await asyncio.gather(*(lane.aclose() for lane in self._lanes), return_exceptions=True)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        if threading.current_thread() is self.thread:
            # Called from a finalizer running on our own loop thread: we cannot wait for ourselves.
            self.loop.call_soon(self.loop.stop)
            return
        try:
            self.submit(self._shutdown()).result(timeout=10)
        except Exception:
            log.debug("error while shutting down the Attentive transport", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class AttentiveTransport:
    """Sends requests to Attentive with auth, per-endpoint throttling and the retry policy.

    Thread-safe. With ``rate_limit_backend = "local"``, transports in one process that share a base URL
    and API key share their limiters (through ``registry``, the process-wide one by default), so two of
    them cannot exceed the budget together. With ``"redis"`` the transport creates a
    :class:`~airflow_provider_attentive.hooks.shared_limit.RedisRateLimiter` (raising
    ``RateLimitBackendUnavailable`` if Redis does not answer) and closes it with the transport. Pass
    ``limiter`` to plug in any other backend (required for ``"sql"``); the caller then closes it.
    """

    def __init__(
        self,
        config: TransportConfig,
        *,
        limiter: RateLimiter | None = None,
        registry: LimiterRegistry | None = None,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._owned_limiter: Any = None
        if limiter is None:
            limiter = _default_limiter(config, registry)
            if config.rate_limit_backend != "local":
                self._owned_limiter = limiter
        self._limiter = limiter
        self._policy = policy or RetryPolicy(
            max_attempts=config.max_attempts,
            backoff_base_s=config.backoff_base,
            backoff_max_s=config.backoff_max,
            max_throttle_s=config.max_throttle_s,
        )
        self._rng = rng or random.Random()
        self._stats = TransportStats()
        self._lock = threading.Lock()
        self._engine: _Engine | None = None
        self._finalizer: weakref.finalize | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def stats(self) -> TransportStats:
        """Cumulative counters for everything this transport sent."""
        return self._stats

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy in use."""
        return self._policy

    @property
    def limiter(self) -> RateLimiter:
        """The rate limiter in use."""
        return self._limiter

    def _get_engine(self) -> _Engine:
        with self._lock:
            if self._closed:
                raise RuntimeError("this AttentiveTransport is closed")
            if self._engine is None:
                host = urllib.parse.urlsplit(self.config.base_url).netloc
                engine = _Engine(self.config, name=f"attentive-transport-{host}")
                aclose = getattr(self._owned_limiter, "aclose", None)
                if aclose is not None:
                    engine.on_shutdown.append(aclose)
                self._engine = engine
                self._finalizer = weakref.finalize(self, engine.stop)
            return self._engine

    def close(self) -> None:
        """Cancel anything still running, close the HTTP connections and stop the loop thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()
        close = getattr(self._owned_limiter, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.debug("error while closing the rate limiter", exc_info=True)

    def __enter__(self) -> AttentiveTransport:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AttentiveTransport(base_url={self.config.base_url!r})"

    # -- public sending API ------------------------------------------------------------------------

    def request(
        self,
        endpoint_name: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        *,
        max_attempts: int | None = None,
    ) -> Result:
        """Send one request and wait for its result. ``max_attempts`` overrides the policy's."""
        endpoint = get_endpoint(endpoint_name)
        engine = self._get_engine()
        if threading.current_thread() is engine.thread:
            raise RuntimeError("AttentiveTransport.request() cannot be called from the transport's own loop")
        policy = self._policy
        if max_attempts is not None:
            policy = RetryPolicy(
                max_attempts=max_attempts,
                backoff_base_s=policy.backoff_base_s,
                backoff_max_s=policy.backoff_max_s,
                throttle_default_s=policy.throttle_default_s,
                throttle_jitter_s=policy.throttle_jitter_s,
                max_throttle_s=policy.max_throttle_s,
            )
        future = engine.submit(self._execute(engine, endpoint, Request(None, body, params), policy))
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def look_ahead(self, endpoint_name: str) -> int:
        """How many requests ``send_many`` pulls before their results are taken.

        About one second of the endpoint's rate (at least 8, at most ``2 * max_concurrency``): the limiter needs
        that many reservations queued to keep the limit busy (half a second cost 8% of subscribe throughput),
        and no more, because the sync engine writes a request's intent when it is pulled, and every
        pulled-but-unanswered request is in doubt if the process dies: 14 for subscribe, not 128.
        """
        rate = self.config.rate_for(endpoint_name)
        return max(8, min(2 * self.config.max_concurrency, math.ceil(rate) + 4))

    def send_many(self, endpoint_name: str, requests: Iterable[Request]) -> Iterator[Result]:
        """Send ``requests`` concurrently and yield one :class:`Result` per request as each completes.

        ``requests`` is consumed lazily, in the calling thread, and at most :meth:`look_ahead` requests
        are pulled but not yet yielded back; the window refills as results are taken, so a
        slow producer or consumer never drains the pipeline. If the iterable raises, nothing more is
        pulled, the results of requests already pulled are yielded, then the exception is re-raised.
        Closing the iterator early cancels what is still outstanding (those requests may or may not
        have reached Attentive).
        """
        endpoint = get_endpoint(endpoint_name)
        engine = self._get_engine()
        return self._send_many(engine, endpoint, requests)

    def _send_many(self, engine: _Engine, endpoint: Endpoint, requests: Iterable[Request]) -> Iterator[Result]:
        source = iter(requests)
        window = self.look_ahead(endpoint.name)
        done: queue.SimpleQueue[concurrent.futures.Future[Result]] = queue.SimpleQueue()
        outstanding: dict[concurrent.futures.Future[Result], Request] = {}
        exhausted = False
        error: Exception | None = None
        try:
            while True:
                while not exhausted and len(outstanding) < window:
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    except Exception as exc:
                        # Finish what was started (the caller has recorded intents for those), then
                        # let the caller see its own exception.
                        error = exc
                        exhausted = True
                        break
                    if not isinstance(item, Request):
                        error = TypeError(f"send_many expects Request objects, got {type(item).__name__}")
                        exhausted = True
                        break
                    future = engine.submit(self._execute(engine, endpoint, item, self._policy))
                    outstanding[future] = item
                    future.add_done_callback(done.put)
                if not outstanding:
                    break
                future = done.get()
                item = outstanding.pop(future)
                yield self._result_of(future, endpoint, item)
            if error is not None:
                raise error
        finally:
            for future in outstanding:
                future.cancel()

    @staticmethod
    def _result_of(future: concurrent.futures.Future[Result], endpoint: Endpoint, item: Request) -> Result:
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            message = "cancelled before completion (transport closed)"
        except Exception as exc:  # _execute turns errors into Results; this is a last line of defence
            message = f"internal error: {type(exc).__name__}"
        return Result(item.key, endpoint.name, Outcome.FAILED, None, None, message, 0, 0, 0.0)

    # -- the retry loop (runs on the transport's event loop) -----------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self.config.api_key, "***")

    async def _execute(self, engine: _Engine, endpoint: Endpoint, item: Request, policy: RetryPolicy) -> Result:
        started = time.monotonic()
        state = RetryState()
        status: int | None = None
        body: Any = None
        error: str | None = None
        try:
            kwargs: dict[str, Any] = {}
            if item.params:
                kwargs["params"] = dict(item.params)
            if item.body is not None:
                kwargs["content"] = json.dumps(item.body, separators=(",", ":")).encode("utf-8")
            while True:
                async with engine.lane() as client:
                    permit = await self._limiter.acquire(endpoint.name)
                    self._stats.add(requests_sent=1)
                    try:
                        response = await client.request(
                            endpoint.method, endpoint.path, extensions=_trace_extension(permit), **kwargs
                        )
                    except httpx.TransportError as exc:
                        status, body = None, None
                        error = self._scrub(f"{endpoint.method} {endpoint.path}: {type(exc).__name__}: {exc}")
                        self._stats.add(network_errors=1)
                        decision = policy.after_error(state, exc, endpoint.idempotent, self._rng)
                    else:
                        status, body = response.status_code, _parse_body(response)
                        decision = self._after_response(endpoint, response, body, state, policy)
                        error = None if decision.outcome is Outcome.OK else self._describe(endpoint, response, body)
                if status == 429:
                    self._stats.add(throttled=1)
                if decision.outcome is not None:
                    return self._finish(item, endpoint, decision, status, body, error, state, started)
                if status != 429:
                    self._stats.add(retries=1)
                log.debug(
                    "%s %s: %s, retrying in %.2f s",
                    endpoint.method,
                    endpoint.path,
                    decision.reason,
                    decision.delay_s,
                )
                # Sleep outside the concurrency gate so waiting requests do not block others.
                await asyncio.sleep(decision.delay_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unserialisable body must still yield one Result
            log.debug("unexpected error sending to %s", endpoint.path, exc_info=True)
            error = self._scrub(f"{endpoint.method} {endpoint.path}: unexpected {type(exc).__name__}: {exc}")
            return self._finish(item, endpoint, Decision(Outcome.FAILED), status, body, error, state, started)

    def _after_response(
        self, endpoint: Endpoint, response: httpx.Response, body: Any, state: RetryState, policy: RetryPolicy
    ) -> Decision:
        remaining = _header_int(response.headers, "x-ratelimit-remaining")
        if remaining is not None:
            self._limiter.note_remaining(endpoint.name, remaining, _header_int(response.headers, "x-ratelimit-limit"))
        retry_after = response.headers.get("retry-after")
        decision = policy.after_status(state, response.status_code, retry_after, self._rng)
        if response.status_code == 429:
            explicit = parse_retry_after(retry_after) is not None and decision.retry
            self._limiter.note_throttled(endpoint.name, decision.delay_s if explicit else None)
        return decision

    def _describe(self, endpoint: Endpoint, response: httpx.Response, body: Any) -> str:
        text = f"{endpoint.method} {endpoint.path} answered HTTP {response.status_code}"
        if response.reason_phrase:
            text += f" {response.reason_phrase}"
        message = _attentive_message(body)
        if message:
            text += f": {message}"
        return self._scrub(text)

    def _finish(
        self,
        item: Request,
        endpoint: Endpoint,
        decision: Decision,
        status: int | None,
        body: Any,
        error: str | None,
        state: RetryState,
        started: float,
    ) -> Result:
        outcome = decision.outcome or Outcome.FAILED
        if outcome is not Outcome.OK and decision.reason:
            error = f"{error} ({decision.reason})" if error else decision.reason
        counter = {
            Outcome.OK: "succeeded",
            Outcome.REJECTED: "rejected",
            Outcome.FAILED: "failed",
            Outcome.IN_DOUBT: "in_doubt",
        }[outcome]
        self._stats.add(**{counter: 1})
        return Result(
            key=item.key,
            endpoint=endpoint.name,
            outcome=outcome,
            status=status,
            body=body,
            error=error,
            attempts=state.attempts,
            throttled=state.throttled,
            elapsed_s=time.monotonic() - started,
        )
