"""Parallel syncs on one API key: combined throughput against Attentive's per-key limits.

Three worker processes start at the same moment, each running a real attributes operator (1,500 rows;
limit 150 requests/s per key) and a real subscriptions operator (50 subscribes; limit 10/s per key) against
one emulator key (its own process, 50 +- 10 ms latency). Modes (``--modes``):

* ``redis`` - connection extra ``rate_limit_backend = "redis"``: one shared budget in a throwaway
  ``redis-server`` (Debian package) on a loopback port;
* ``sql`` - ``rate_limit_backend = "sql"`` on a SQLite file all processes share (``rate_limit_sql_conn_id``);
* ``share`` - no shared backend, ``rate_limit_share = 1/3``: the Airflow-pool-per-key alternative;
* ``local`` - no coordination at all (each process at the full limit), for contrast; slow and full of 429s.

For each mode and endpoint it prints the combined arrival rate at the emulator (first to last arrival) as a
fraction of the limit, the busiest one-second window the emulator saw (every arrival, refused ones included)
and its 429 count.

    .venv/bin/python -m benchmarks.parallel_syncs [--modes redis,sql,share] [--attributes 1500 --subscribe 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, KeySpec
from tests.helpers.redis import RedisServer
from tests.helpers.scale import run_parallel_syncs

KEY = "bench-parallel-key"
LIMITS = {"attributes": 150, "subscribe": 10}
MODES = ("redis", "sql", "share", "local")


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    except (OSError, IndexError):
        redis_version = "v=?"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}, "
        f"redis-server {redis_version.removeprefix('v=')}, load average {load:.2f} at start"
    )


def run_mode(mode: str, args: argparse.Namespace, redis_url: str | None, workdir: Path) -> list[dict[str, Any]]:
    extra: dict[str, Any] = {"timeout": 10, "max_concurrency": 32}
    env: dict[str, str] = {}
    if mode == "redis":
        extra.update(rate_limit_backend="redis", rate_limit_redis_url=redis_url)
    elif mode == "sql":
        db = workdir / "rate-limits.db"
        env["AIRFLOW_CONN_RATE_LIMITS"] = json.dumps({"conn_type": "sqlite", "host": str(db)})
        extra.update(rate_limit_backend="sql", rate_limit_sql_conn_id="rate_limits")
    elif mode == "share":
        extra.update(rate_limit_backend="local", rate_limit_share=round(1 / args.processes, 6))
    keys = {KEY: KeySpec(scopes=ALL_SCOPES, company_name="Bench Co")}
    with Emulator.spawn(keys=keys) as emu:
        emu.client.set_faults(latency_ms=args.latency_ms, jitter_ms=10, seed=1)
        run = run_parallel_syncs(
            emu,
            KEY,
            workdir / mode,
            extra=extra,
            processes=args.processes,
            attributes_rows=args.attributes,
            subscribe_rows=args.subscribe,
            timeout_s=args.timeout,
            env=env,
        )
    rows = []
    jobs = run.summaries()
    for job in jobs:
        if "error" in job:
            print(f"{mode}: {job.get('sync_id')} failed: {job['error']}", file=sys.stderr)
    for endpoint, limit in LIMITS.items():
        stats = run.endpoint(endpoint)
        prefix = "scale.attributes" if endpoint == "attributes" else "scale.subscriptions"
        mine = [j for j in jobs if j.get("sync_id", "").startswith(prefix)]
        ok = sum(sum(j["summary"]["succeeded"].values()) for j in mine if "summary" in j)
        wall = max((j["finished"] for j in mine), default=run.released_at) - run.released_at
        rate = run.server_rate(endpoint)
        rows.append(
            {
                "mode": mode,
                "endpoint": endpoint,
                "limit": limit,
                "rows": args.processes * (args.attributes if endpoint == "attributes" else args.subscribe),
                "ok": ok,
                "requests": stats["requests"],
                "server_rate": round(rate, 2),
                "fraction": round(rate / limit, 3),
                "wall_s": round(wall, 1),
                "max_window": stats["max_window_all"],
                "http_429": stats["rate_limited"],
                "exit_codes": run.returncodes,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="redis,sql,share", help=f"comma-separated, from {','.join(MODES)}")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--attributes", type=int, default=1500, help="attribute rows per process")
    parser.add_argument("--subscribe", type=int, default=50, help="subscribe rows per process")
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting redis-server")
    parser.add_argument("--json", action="store_true", help="print one JSON object per mode and endpoint")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}")

    header = machine()
    rows: list[dict[str, Any]] = []
    server: RedisServer | None = None
    try:
        redis_url = args.redis_url
        if "redis" in modes and redis_url is None:
            server = RedisServer().start()
            redis_url = server.url
        with tempfile.TemporaryDirectory(prefix="attentive-bench-parallel-") as tmp:
            for mode in modes:
                rows.extend(run_mode(mode, args, redis_url, Path(tmp)))
    finally:
        if server is not None:
            server.close()

    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(header)
        print(f"{args.processes} processes at once, one key, emulator latency {args.latency_ms:g} ms")
        print(
            f"{'mode':<6} {'endpoint':<11} {'limit/s':>7} {'rows':>5} {'ok':>5} {'requests':>8} {'server/s':>8} "
            f"{'frac':>6} {'wall s':>6} {'max 1s':>6} {'429s':>5}"
        )
        for r in rows:
            print(
                f"{r['mode']:<6} {r['endpoint']:<11} {r['limit']:>7} {r['rows']:>5} {r['ok']:>5} {r['requests']:>8} "
                f"{r['server_rate']:>8} {r['fraction']:>6} {r['wall_s']:>6} {r['max_window']:>6} {r['http_429']:>5}"
            )
    shared = [r for r in rows if r["mode"] != "local"]
    failed = [r for r in shared if r["max_window"] > r["limit"] or r["ok"] != r["rows"] or any(r["exit_codes"])]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
