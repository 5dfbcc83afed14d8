"""Requests/s of apache-airflow-providers-http's hooks against this provider's transport, on the emulator.

Everything runs over loopback against an emulator started in its own process with its rate limits
raised, so no client is throttled and the figures compare the HTTP stacks alone:

* ``transport``: ``AttentiveTransport.send_many`` (httpx, keep-alive pool, ``max_concurrency`` in flight);
* ``httpx.AsyncClient``: bare httpx, one single-connection client per in-flight request like the transport's
  lanes, without its limiter, retry policy and thread hand-off (what httpx itself costs);
* ``HttpAsyncHook``: one ``HttpAsyncHook.session()`` (one aiohttp session) with the same number in flight;
* ``HttpHook.run``: one request at a time, as ``HttpOperator`` sends them (a new requests Session per call,
  over the hook's one keep-alive adapter);
* ``HttpHook.run x threads``: ``HttpHook.run`` from a thread pool of ``max_concurrency`` threads.

Each variant sends ``POST /v1/attributes/custom`` until it has sent ``--requests`` or ``--seconds`` have
passed, whichever comes first, and reports requests/s and client CPU per request. The HTTP provider is not a
dependency of this package, so run the script in a virtualenv that has it:

    .venv/bin/uv venv /tmp/http-bench --python .venv/bin/python
    .venv/bin/uv pip install --python /tmp/http-bench/bin/python -e '.[emulator]' apache-airflow-providers-http
    /tmp/http-bench/bin/python -m benchmarks.http_provider_throughput [--latency-ms 0 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from airflow_provider_attentive.client import AttentiveTransport, LimiterRegistry, Request, TransportConfig
from airflow_provider_attentive.emulator import Emulator, EmulatorProcess, KeySpec

KEY = "bench-key"
CONN_ID = "bench_http"
ENDPOINT = "/v1/attributes/custom"
UNTHROTTLED = 1_000_000  # requests/s: far above what loopback reaches, so no limiter ever waits


def body(i: int) -> dict[str, Any]:
    return {"user": {"phone": f"+1415{2000000 + i % 1000000:07d}"}, "properties": {"tier": "gold", "row": i}}


class Budget:
    """Hands out request numbers until the count or the time bound is reached (thread-safe)."""

    def __init__(self, requests: int, seconds: float) -> None:
        self._next = 0
        self._limit = requests
        self._deadline = time.monotonic() + seconds
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._next >= self._limit or time.monotonic() >= self._deadline:
                return None
            self._next += 1
            return self._next - 1


def _cpu() -> float:
    return time.process_time()


def measure(name: str, send: Callable[[Budget], int], requests: int, seconds: float) -> dict[str, Any]:
    budget = Budget(requests, seconds)
    cpu, started = _cpu(), time.monotonic()
    ok = send(budget)
    elapsed, cpu = time.monotonic() - started, _cpu() - cpu
    return {
        "variant": name,
        "ok": ok,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(ok / elapsed, 1),
        "client_cpu_us_per_request": round(1e6 * cpu / max(ok, 1)),
    }


def via_transport(url: str, concurrency: int) -> Callable[[Budget], int]:
    def send(budget: Budget) -> int:
        config = TransportConfig(url, KEY, rate_limits={"attributes": UNTHROTTLED}, max_concurrency=concurrency)

        def produce() -> Iterator[Request]:
            while (i := budget.take()) is not None:
                yield Request(i, body(i))

        with AttentiveTransport(config, registry=LimiterRegistry()) as transport:
            return sum(r.ok for r in transport.send_many("attributes", produce()))

    return send


def via_httpx(url: str, concurrency: int) -> Callable[[Budget], int]:
    async def run(budget: Budget) -> int:
        ok = 0
        # One single-connection client per worker, as the transport's lanes are: httpcore's shared pool slows
        # down badly with dozens of connections (see LoopThread in client/loop.py).
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        headers = {"Authorization": f"Bearer {KEY}"}
        # One TLS context for all clients, as the transport does: each new one loads the CA bundle.
        ssl_context = httpx.create_ssl_context()

        async def worker() -> None:
            nonlocal ok
            async with httpx.AsyncClient(
                base_url=url, headers=headers, limits=limits, timeout=30, verify=ssl_context
            ) as client:
                while (i := budget.take()) is not None:
                    response = await client.post(ENDPOINT, json=body(i))
                    ok += response.status_code == 200  # not `ok += await ...`: ok would be read before the await

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return ok

    return lambda budget: asyncio.run(run(budget))


def via_async_hook(concurrency: int) -> Callable[[Budget], int]:
    from airflow.providers.http.hooks.http import HttpAsyncHook

    async def run(budget: Budget) -> int:
        ok = 0
        hook = HttpAsyncHook(method="POST", http_conn_id=CONN_ID, retry_limit=1)
        async with hook.session() as session:

            async def worker() -> None:
                nonlocal ok
                while (i := budget.take()) is not None:
                    response = await session.run(ENDPOINT, json=body(i))
                    await response.read()
                    ok += response.status == 200

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return ok

    return lambda budget: asyncio.run(run(budget))


def via_hook(threads: int) -> Callable[[Budget], int]:
    from airflow.providers.http.hooks.http import HttpHook

    hook = HttpHook(method="POST", http_conn_id=CONN_ID)

    def worker(budget: Budget) -> int:
        ok = 0
        while (i := budget.take()) is not None:
            ok += hook.run(ENDPOINT, json=body(i)).status_code == 200
        return ok

    def send(budget: Budget) -> int:
        if threads == 1:
            return worker(budget)
        with ThreadPoolExecutor(threads) as pool:
            return sum(pool.map(worker, [budget] * threads))

    return send


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="at most this many requests per variant")
    parser.add_argument("--seconds", type=float, default=15, help="and at most this long per variant")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0, 50])
    parser.add_argument("--json", action="store_true", help="print one JSON object per variant")
    args = parser.parse_args(argv)
    try:
        import airflow.providers.http  # noqa: F401
    except ImportError:
        print("apache-airflow-providers-http is not installed here; see this script's docstring", file=sys.stderr)
        return 2

    # HttpHook's threads share one keep-alive adapter whose pool holds 10 connections; urllib3 logs a
    # warning for each connection beyond it, which would bury the table.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as home, Emulator.spawn(keys={KEY: KeySpec()}) as emu:
        os.environ.setdefault("AIRFLOW_HOME", home)
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
            # An http connection's extras are sent as request headers by both hooks.
            {"conn_type": "http", "host": emu.url, "extra": {"Authorization": f"Bearer {KEY}"}}
        )
        emu.client.set_limits({"*": UNTHROTTLED})
        variants = (
            ("transport", via_transport(emu.url, args.concurrency)),
            ("httpx.AsyncClient", via_httpx(emu.url, args.concurrency)),
            ("HttpAsyncHook", via_async_hook(args.concurrency)),
            ("HttpHook.run", via_hook(1)),
            (f"HttpHook.run x {args.concurrency} threads", via_hook(args.concurrency)),
        )
        for latency in args.latency_ms:
            for name, send in variants:
                _reset(emu, latency)
                row = measure(name, send, args.requests, args.seconds)
                row["latency_ms"] = latency
                row["server_received"] = emu.client.stats()["endpoints"]["attributes"]["requests"]
                rows.append(row)

    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, concurrency {args.concurrency}")
        print(f"{'latency':>7} {'variant':<28} {'ok':>5} {'secs':>6} {'req/s':>8} {'CPU µs/req':>10}")
        for r in rows:
            print(
                f"{r['latency_ms']:>5g}ms {r['variant']:<28} {r['ok']:>5} {r['seconds']:>6} "
                f"{r['requests_per_s']:>8} {r['client_cpu_us_per_request']:>10}"
            )
    return 0 if all(r["ok"] == r["server_received"] for r in rows) else 1


def _reset(emu: EmulatorProcess, latency_ms: float) -> None:
    emu.client.reset()
    emu.client.set_limits({"*": UNTHROTTLED})
    emu.client.set_faults(latency_ms=latency_ms, jitter_ms=0, seed=1)


if __name__ == "__main__":
    sys.exit(main())
