"""HTTP transport for the Attentive API: auth headers, throttling, retries and concurrent sends.

Threading model: each :class:`AttentiveTransport` owns one background thread running an asyncio loop
with up to ``max_concurrency`` keep-alive connections (see
:class:`~airflow_provider_attentive.client.loop.LoopThread`). Callers stay synchronous:
:meth:`AttentiveTransport.request` blocks for one answer, and :meth:`AttentiveTransport.send_many` pulls
requests lazily from the caller's own thread (the sync engine writes intents to a thread-bound DB
connection while producing them) and yields results as they complete.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import queue
import random
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx

from airflow_provider_attentive.client.config import TransportConfig
from airflow_provider_attentive.client.endpoints import Endpoint, EndpointName, get_endpoint
from airflow_provider_attentive.client.loop import LoopThread
from airflow_provider_attentive.client.models import Request, RequestOutcome, Result
from airflow_provider_attentive.client.ratelimit.backends import limiter_for_config
from airflow_provider_attentive.client.ratelimit.base import RateLimiter, trace_extension
from airflow_provider_attentive.client.ratelimit.local import LimiterRegistry
from airflow_provider_attentive.client.redact import install_httpx_filter
from airflow_provider_attentive.client.retry import Decision, RetryPolicy, RetryState, parse_retry_after
from airflow_provider_attentive.client.scrub import scrub, scrub_body
from airflow_provider_attentive.client.stats import TransportStats

__all__ = ["AttentiveTransport"]

log = logging.getLogger(__name__)

# Installed with the transport, so no process can send (and have httpx log a phone number) without it.
install_httpx_filter()

# Answers are scrubbed when parsed, before anything is cut to this length: an answer that echoes the request
# headers, cut in the middle of the key, would otherwise leave its first characters where scrubbing misses them.
_MAX_ERROR_TEXT = 500


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


class AttentiveTransport:
    """Sends requests to Attentive with auth, per-endpoint throttling and the retry policy.

    Thread-safe. With ``rate_limit_backend = "local"``, transports in one process that share a base URL
    and API key share their limiters (through ``registry``, the process-wide one by default), so two of
    them cannot exceed the budget together. With ``"redis"`` the transport creates a
    :class:`~airflow_provider_attentive.client.ratelimit.redis.RedisRateLimiter` (raising
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
        self._secrets = tuple(config.secret_values())
        self._owned_limiter: Any = None
        if limiter is None:
            limiter = limiter_for_config(config, registry)
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
        self._loop_thread: LoopThread | None = None
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

    def _get_loop_thread(self) -> LoopThread:
        with self._lock:
            if self._closed:
                raise RuntimeError("this AttentiveTransport is closed")
            if self._loop_thread is None:
                host = urllib.parse.urlsplit(self.config.base_url).netloc
                loop_thread = LoopThread(self.config, name=f"attentive-transport-{host}")
                aclose = getattr(self._owned_limiter, "aclose", None)
                if aclose is not None:
                    loop_thread.on_shutdown.append(aclose)
                self._loop_thread = loop_thread
                self._finalizer = weakref.finalize(self, loop_thread.stop)
            return self._loop_thread

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
        endpoint_name: EndpointName | str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        *,
        path_params: Mapping[str, str] | None = None,
        max_attempts: int | None = None,
    ) -> Result:
        """Send one request and wait for its result. ``max_attempts`` overrides the policy's.

        ``endpoint_name`` is an :class:`EndpointName` or its value; an unknown name raises ``KeyError``.
        ``path_params`` fills the endpoint's ``{...}`` parameters; a missing one raises ``ValueError``
        before anything is sent.
        """
        endpoint = get_endpoint(endpoint_name)
        item = Request(None, body, params, path_params)
        path = endpoint.resolve_path(path_params)
        loop_thread = self._get_loop_thread()
        if threading.current_thread() is loop_thread.thread:
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
        future = loop_thread.submit(self._execute(loop_thread, endpoint, item, policy, path))
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def look_ahead(self, endpoint_name: EndpointName | str) -> int:
        """How many requests ``send_many`` pulls before their results are taken.

        About one second of the endpoint's rate (at least 8, at most ``2 * max_concurrency``): the limiter needs
        that many reservations queued to keep the limit busy (half a second cost 8% of subscribe throughput),
        and no more, because the sync engine writes a request's intent when it is pulled, and every
        pulled-but-unanswered request is in doubt if the process dies: 14 for subscribe, not 128.
        """
        rate = self.config.rate_for(endpoint_name)
        return max(8, min(2 * self.config.max_concurrency, math.ceil(rate) + 4))

    def send_many(
        self, endpoint_name: EndpointName | str, requests: Iterable[Request], *, window: int | None = None
    ) -> Iterator[Result]:
        """Send ``requests`` concurrently and yield one :class:`Result` per request as each completes.

        ``requests`` is consumed lazily, in the calling thread, and at most ``window`` (default
        :meth:`look_ahead`) requests are pulled but not yet yielded back; the window refills as results are
        taken, so a slow producer or consumer never drains the pipeline. If the iterable raises, nothing more
        is pulled, the results of requests already pulled are yielded, then the exception is re-raised.
        Closing the iterator early cancels what is still outstanding (those requests may or may not
        have reached Attentive).
        """
        endpoint = get_endpoint(endpoint_name)
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be a positive integer, got {window!r}")
        loop_thread = self._get_loop_thread()
        return self._send_many(loop_thread, endpoint, requests, window or self.look_ahead(endpoint.name))

    def _send_many(
        self, loop_thread: LoopThread, endpoint: Endpoint, requests: Iterable[Request], window: int
    ) -> Iterator[Result]:
        source = iter(requests)
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
                    try:
                        path = endpoint.resolve_path(item.path_params)
                    except ValueError as exc:
                        # A caller's mistake like a non-Request item: nothing of it is sent.
                        error = exc
                        exhausted = True
                        break
                    future = loop_thread.submit(self._execute(loop_thread, endpoint, item, self._policy, path))
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
        return Result(item.key, endpoint.name, RequestOutcome.FAILED, None, None, message, 0, 0, 0.0)

    # -- the retry loop (runs on the transport's event loop) -----------------------------------------

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    async def _execute(
        self, loop_thread: LoopThread, endpoint: Endpoint, item: Request, policy: RetryPolicy, path: str
    ) -> Result:
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
                async with loop_thread.lane() as client:
                    permit = await self._limiter.acquire(endpoint.name)
                    self._stats.add(requests_sent=1)
                    try:
                        response = await client.request(
                            endpoint.method, path, extensions=trace_extension(permit), **kwargs
                        )
                    except httpx.TransportError as exc:
                        status, body = None, None
                        error = self._scrub(f"{endpoint.method} {path}: {type(exc).__name__}: {exc}")
                        self._stats.add(network_errors=1)
                        decision = policy.after_error(state, exc, endpoint.idempotent, self._rng)
                    else:
                        status, body = (
                            response.status_code,
                            scrub_body(_parse_body(response), self._secrets, raw=response.text),
                        )
                        decision = self._after_response(endpoint, response, body, state, policy)
                        error = (
                            None
                            if decision.outcome is RequestOutcome.OK
                            else self._describe(endpoint, path, response, body)
                        )
                if status == 429:
                    self._stats.add(throttled=1)
                if decision.outcome is not None:
                    return self._finish(item, endpoint, decision, status, body, error, state, started)
                if status != 429:
                    self._stats.add(retries=1)
                log.debug(
                    "%s %s: %s, retrying in %.2f s",
                    endpoint.method,
                    path,
                    decision.reason,
                    decision.delay_s,
                )
                # Sleep outside the concurrency gate so waiting requests do not block others.
                await asyncio.sleep(decision.delay_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unserialisable body must still yield one Result
            log.debug("unexpected error sending to %s", path, exc_info=True)
            error = self._scrub(f"{endpoint.method} {path}: unexpected {type(exc).__name__}: {exc}")
            return self._finish(item, endpoint, Decision(RequestOutcome.FAILED), status, body, error, state, started)

    def _after_response(
        self, endpoint: Endpoint, response: httpx.Response, body: Any, state: RetryState, policy: RetryPolicy
    ) -> Decision:
        remaining = _header_int(response.headers, "x-ratelimit-remaining")
        if remaining is not None:
            self._limiter.note_remaining(endpoint.name, remaining, _header_int(response.headers, "x-ratelimit-limit"))
        retry_after = response.headers.get("retry-after")
        decision = policy.after_status(
            state, response.status_code, retry_after, self._rng, notifies_on_repeat=endpoint.notifies_on_repeat
        )
        if response.status_code == 429:
            explicit = parse_retry_after(retry_after) is not None and decision.retry
            self._limiter.note_throttled(endpoint.name, decision.delay_s if explicit else None)
        return decision

    def _describe(self, endpoint: Endpoint, path: str, response: httpx.Response, body: Any) -> str:
        text = f"{endpoint.method} {path} answered HTTP {response.status_code}"
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
        outcome = decision.outcome or RequestOutcome.FAILED
        if outcome is not RequestOutcome.OK and decision.reason:
            error = f"{error} ({decision.reason})" if error else decision.reason
        counter = {
            RequestOutcome.OK: "succeeded",
            RequestOutcome.REJECTED: "rejected",
            RequestOutcome.FAILED: "failed",
            RequestOutcome.IN_DOUBT: "in_doubt",
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
