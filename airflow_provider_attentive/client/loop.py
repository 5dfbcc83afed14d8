"""The event-loop thread behind one transport: its asyncio loop, HTTP connections and concurrency gate.

Callers of the transport stay synchronous; everything that touches the network runs on this thread's
loop, and :meth:`LoopThread.submit` hands coroutines to it from any other thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import httpx

from airflow_provider_attentive.client.config import TransportConfig

__all__ = ["LoopThread"]

log = logging.getLogger(__name__)

# Drop idle connections well before a typical load balancer does (60 s on AWS): reusing one the server
# is closing fails in a way that looks like "the request may have arrived" and would make a
# subscribe IN_DOUBT for nothing.
_KEEPALIVE_S = 15.0
_T = TypeVar("_T")


class LoopThread:
    """The loop thread, HTTP connections and concurrency gate behind one transport.

    Each in-flight request borrows a *lane*: an ``httpx.AsyncClient`` limited to one keep-alive
    connection. httpcore 1.0's shared pool rescans every connection for every queued request and
    hands one idle connection to several requests at once, which at 150 requests/s over dozens of
    connections burned ~10 ms of CPU per request and delayed sends by hundreds of milliseconds
    (enough to break the rate limiter's timing). With one connection per lane that bookkeeping is
    constant-time; up to ``max_concurrency`` lanes (and so connections) are kept alive.

    Kept apart from :class:`~airflow_provider_attentive.client.transport.AttentiveTransport` so a
    ``weakref.finalize`` can shut it down when a transport is dropped without ``close()``.
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
            headers=config.request_headers(),
            timeout=httpx.Timeout(config.timeout),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=_KEEPALIVE_S),
            verify=self._ssl_context,
            follow_redirects=False,
            # Never HTTP(S)_PROXY / ALL_PROXY or .netrc from the environment: a proxy set for something else
            # would receive the bearer key (in clear, for a plain-http emulator). Only the connection's own.
            trust_env=False,
            proxy=config.proxy,
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
        """Run ``coro`` on the loop; the future can be waited on from any other thread."""
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
        """Cancel what is still running, close the connections and stop the thread (idempotent)."""
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
