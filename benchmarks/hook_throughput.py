"""Transport throughput: how close AttentiveTransport.send_many gets to each endpoint's rate limit.

Starts the emulator in its own process with 50 ms (+-10 ms) latency, then for each endpoint sends N
requests through ``AttentiveTransport.send_many`` and reports:

* client rate: N / (first send -> last result), latency of the last answer included;
* server rate: (N - 1) / (first -> last arrival at the emulator), what Attentive would see;
* the emulator's busiest one-second window and its 429 count (must stay <= the limit and 0).

    .venv/bin/python -m benchmarks.hook_throughput [--attributes 3000 --subscribe 200 --unsubscribe 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from airflow_provider_attentive.client import ENDPOINTS, AttentiveTransport, LimiterRegistry, Request, TransportConfig
from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, EmulatorProcess, KeySpec

KEY = "bench-key"


def attributes_body(i: int) -> dict[str, Any]:
    return {"user": {"phone": f"+1415{2000000 + i:07d}"}, "properties": {"tier": "gold", "row": i}}


def subscribe_body(i: int) -> dict[str, Any]:
    return {"user": {"phone": f"+1628{2000000 + i:07d}"}, "signUpSourceId": "12345"}


def unsubscribe_body(i: int) -> dict[str, Any]:
    return {
        "user": {"phone": f"+1628{2000000 + i:07d}"},
        "subscriptions": [{"type": "MARKETING", "channel": "TEXT"}],
        "notification": {"disabled": True},
    }


def run(emu: EmulatorProcess, endpoint: str, n: int, body: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    limit = ENDPOINTS[endpoint].default_rate
    config = TransportConfig(emu.url, KEY)
    with AttentiveTransport(config, registry=LimiterRegistry()) as transport:

        def requests() -> Iterator[Request]:
            for i in range(n):
                yield Request(i, body(i))

        started = time.monotonic()
        results = list(transport.send_many(endpoint, requests()))
        elapsed = time.monotonic() - started
        stats = transport.stats.snapshot()
    arrivals = sorted(e["received_at"] for e in emu.client.requests(endpoint=endpoint))
    server = emu.client.stats()["endpoints"][endpoint]
    client_rate = n / elapsed
    server_rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    return {
        "endpoint": endpoint,
        "requests": n,
        "limit": limit,
        "ok": sum(r.ok for r in results),
        "seconds": round(elapsed, 2),
        "client_rate": round(client_rate, 2),
        "client_fraction": round(client_rate / limit, 3),
        "server_rate": round(server_rate, 2),
        "server_fraction": round(server_rate / limit, 3),
        "max_window": server["max_window_all"],
        "http_429": server["rate_limited"],
        "retries": stats["retries"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attributes", type=int, default=3000)
    parser.add_argument("--subscribe", type=int, default=200)
    parser.add_argument("--unsubscribe", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--json", action="store_true", help="print one JSON object per endpoint")
    args = parser.parse_args(argv)

    rows = []
    with Emulator.spawn(keys={KEY: KeySpec(scopes=ALL_SCOPES, company_name="Bench Co")}) as emu:
        for endpoint, n, body in (
            ("attributes", args.attributes, attributes_body),
            ("subscribe", args.subscribe, subscribe_body),
            ("unsubscribe", args.unsubscribe, unsubscribe_body),
        ):
            if n <= 1:
                continue
            emu.client.reset()
            emu.client.set_faults(latency_ms=args.latency_ms, jitter_ms=10, seed=1)
            rows.append(run(emu, endpoint, n, body))

    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, emulator latency {args.latency_ms:g} ms")
        header = (
            f"{'endpoint':<12} {'n':>5} {'limit/s':>7} {'ok':>5} {'secs':>6} {'client/s':>9} {'frac':>6} "
            f"{'server/s':>9} {'frac':>6} {'max 1s':>6} {'429s':>5}"
        )
        print(header)
        for r in rows:
            print(
                f"{r['endpoint']:<12} {r['requests']:>5} {r['limit']:>7g} {r['ok']:>5} {r['seconds']:>6} "
                f"{r['client_rate']:>9} {r['client_fraction']:>6} {r['server_rate']:>9} {r['server_fraction']:>6} "
                f"{r['max_window']:>6} {r['http_429']:>5}"
            )
    failed = [r for r in rows if r["http_429"] or r["max_window"] > r["limit"] or r["ok"] != r["requests"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
