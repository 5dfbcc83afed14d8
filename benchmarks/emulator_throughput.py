"""Throughput of the Attentive emulator under concurrent keep-alive load.

Starts the emulator as a subprocess (so client and server do not share a GIL), raises its
rate limits so nothing is 429'd, then drives ``POST /v1/attributes/custom`` with N
concurrent workers, each owning one keep-alive ``httpx.AsyncClient`` connection.

    .venv/bin/python -m benchmarks.emulator_throughput --duration 10 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
from collections import Counter

import httpx

from airflow_provider_attentive.emulator import Emulator, KeySpec

KEY = "bench-key"


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (Linux /proc); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _worker(url: str, deadline: float, counts: Counter[int], latencies: list[float], n: int) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=f"{url}/v1", headers=headers, limits=limits, timeout=30) as client:
        i = 0
        while time.monotonic() < deadline:
            body = {
                "properties": {"plan": "gold", "score": i, "vip": True},
                "user": {"phone": f"+1415{n:03d}{i % 10000:04d}"},
            }
            started = time.perf_counter()
            response = await client.post("/attributes/custom", json=body)
            latencies.append(time.perf_counter() - started)
            counts[response.status_code] += 1
            i += 1


async def _raw_worker(url: str, deadline: float, counts: Counter[int], latencies: list[float], n: int) -> None:
    # Pre-encoded requests on a bare asyncio connection: measures the server's ceiling, since
    # httpx itself needs more CPU per request than the emulator does.
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"properties":{"plan":"gold","vip":true},"user":{"phone":"+14155550100"}}'
    request = (
        f"POST /v1/attributes/custom HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            counts[int(head[9:12])] += 1
    finally:
        writer.close()


async def _drive(url: str, duration: float, concurrency: int, raw: bool) -> tuple[Counter[int], list[float], float]:
    counts: Counter[int] = Counter()
    latencies: list[float] = []
    started = time.monotonic()
    deadline = started + duration
    worker = _raw_worker if raw else _worker
    await asyncio.gather(*(worker(url, deadline, counts, latencies, n) for n in range(concurrency)))
    return counts, latencies, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--raw", action="store_true", help="use a minimal socket client instead of httpx (server ceiling)"
    )
    args = parser.parse_args()

    with Emulator.spawn(keys={KEY: KeySpec()}) as running:
        running.client.set_limits({"*": 1_000_000})
        server_cpu0 = _cpu_seconds(running.process.pid)
        client_cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        counts, latencies, elapsed = asyncio.run(_drive(running.url, args.duration, args.concurrency, args.raw))
        client_cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu1 = _cpu_seconds(running.process.pid)
        stats = running.client.stats()["endpoints"]["attributes"]

    total = sum(counts.values())
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    client_kind = "raw sockets" if args.raw else "httpx.AsyncClient"
    print(
        f"client={client_kind} concurrency={args.concurrency} duration={elapsed:.1f}s requests={total} statuses={dict(counts)}"
    )
    print(
        f"latency ms: median={statistics.median(latencies) * 1000:.1f} p99={p99 * 1000:.1f}; "
        f"server saw {stats['requests']} requests, max_window_all={stats['max_window_all']}"
    )
    client_cpu = (client_cpu1.ru_utime + client_cpu1.ru_stime) - (client_cpu0.ru_utime + client_cpu0.ru_stime)
    if server_cpu0 is not None and server_cpu1 is not None:
        # Each side is single-threaded: ~100% means that side is the bottleneck.
        print(
            f"cpu busy: server {100 * (server_cpu1 - server_cpu0) / elapsed:.0f}%, "
            f"load generator {100 * client_cpu / elapsed:.0f}%"
        )
    print(f"throughput: {total / elapsed:.0f} requests/s")


if __name__ == "__main__":
    main()
