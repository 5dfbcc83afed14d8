"""Bulk attribute jobs: N changed rows from SQLite through v2 bulk jobs, then the run that reconciles them.

1. builds a SQLite warehouse with N customers and seeds the sync state as if every row had been accepted
   (direct writes: the first run is not what this measures), then changes every row's loyalty tier;
2. starts the emulator as a subprocess with 50 ms (+-10 ms) latency on every API call (the results files
   are served from its control routes, which take no faults);
3. runs the sync in a fresh process (its peak RSS is its own) as ``AttentiveAttributesOperator`` builds it
   with ``bulk="auto"`` (N is above the 100,000-row threshold) and ``bulk_wait=0``: the run submits
   ceil(N / 256) jobs (the engine fills every request across chunks) and ends; nobody waits for Attentive's hours of job processing, and the jobs are
   reconciled by the next run. Reports the wall time, the ``bulk`` requests, the busiest second the
   emulator saw on ``bulk`` (its limit is 100/s) and peak RSS;
4. lets the emulator finish the jobs, then runs the sync again in a fresh process: it reads each job's
   status (``bulk_job``), downloads each results file and records every row's answer; reports its wall
   time and requests;
5. prints, beside them, what the same rows cost through v1 at its 150 requests/s: N requests, N / 150 s.

    .venv/bin/python -m benchmarks.bulk_attributes [--rows 1000000 --latency-ms 50]
    .venv/bin/python -m benchmarks.bulk_attributes --rows 200000 --profile /tmp/bulk-prof   # where the time goes

The wall times are the sync's own (engine, transport, state writes), without Airflow's task start-up.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from airflow_provider_attentive.client import ENDPOINTS, AttentiveTransport, EndpointName, TransportConfig
from airflow_provider_attentive.sync.engine import SyncEngine, SyncOptions
from airflow_provider_attentive.sync.objects import AttributesType
from airflow_provider_attentive.sync.objects.attributes import BulkAttributesDelivery
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.state import StateStore
from benchmarks.child import run_child
from benchmarks.unchanged_rerun import SQL, build, seed_state

KEY = "bench-key"
SYNC_ID = "bench"  # the sync id seed_state writes under
# AttentiveAttributesOperator's defaults (bulk="auto", bulk_threshold, bulk_batch_size).
THRESHOLD = 100_000
BATCH = 256
CHUNK = 1000  # the operator's default; bulk requests are filled to BATCH across chunks


def sync(db: Path, url: str, chunk_size: int = CHUNK) -> dict[str, Any]:
    """One run of the attributes sync as the operator builds it with ``bulk_wait=0``."""
    conn = sqlite3.connect(db)
    try:
        with AttentiveTransport(TransportConfig(base_url=url, api_key=KEY)) as transport:
            delivery = BulkAttributesDelivery(transport, mode="auto", threshold=THRESHOLD, batch_size=BATCH, wait_s=0)
            engine = SyncEngine(
                AttributesType(primary_key="customer_id", mapping=None, default_region=None),
                SyncOptions(sync_id=SYNC_ID, chunk_size=chunk_size, progress_interval_s=30),
                source=SqlSource(conn, SQL, chunk_size=chunk_size),
                state=StateStore(conn),
                sender=transport,
                delivery=delivery,
            )
            return engine.run()
    finally:
        conn.close()


def child(db: str, url: str, chunk_size: str, profile: str) -> None:
    """Runs in a fresh process so that its peak RSS is the run's own; prints one JSON line."""
    profiler = cProfile.Profile() if profile != "-" else None
    t0 = time.perf_counter()
    c0 = time.process_time()
    if profiler:
        profiler.enable()
    summary = sync(Path(db), url, int(chunk_size))
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    keep = (
        "rows_read",
        "unchanged",
        "succeeded",
        "failed",
        "rejected",
        "requests",
        "bulk_jobs_submitted",
        "bulk_jobs_pending",
        "bulk_jobs_completed",
        "awaiting_results",
        "awaiting_job",
        "reconciled",
        "bulk_fallback",
    )
    out = {k: summary.get(k) for k in keep}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_mb, **out}))


def sync_child(db: Path, url: str, chunk_size: int, profile: str | None) -> dict[str, Any]:
    return run_child("benchmarks.bulk_attributes", str(db), url, str(chunk_size), profile or "-")


def change_every_row(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("UPDATE customers SET loyalty_tier = loyalty_tier || '-plus'")
    conn.commit()
    conn.close()


def hms(seconds: float) -> str:
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="changed rows (>= 100,000 for bulk='auto')")
    parser.add_argument("--latency-ms", type=float, default=50, help="the emulator's latency on every API call")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=CHUNK,
        help="rows per chunk (the operator's chunk_size; 1,000 by default there)",
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="write a cProfile of each run to DIR (submit.prof, reconcile.prof)"
    )
    parser.add_argument("--child", nargs=4, metavar=("DB", "URL", "CHUNK", "PROFILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.rows < THRESHOLD:
        parser.error(f"--rows must be at least {THRESHOLD:,}: below it bulk='auto' sends through v1")

    from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, KeySpec

    expected_jobs = math.ceil(args.rows / BATCH) if args.chunk_size % BATCH == 0 else None
    expected = f"{expected_jobs:,}" if expected_jobs else "more than ceil(rows / 256)"
    bulk_limit = ENDPOINTS[EndpointName.BULK].default_rate
    v1_rate = ENDPOINTS[EndpointName.ATTRIBUTES].default_rate
    with tempfile.TemporaryDirectory(prefix="attentive-bench-") as tmp:
        db = Path(tmp) / "warehouse.db"
        t = time.perf_counter()
        build(db, args.rows)
        seed_state(db)
        change_every_row(db)
        print(f"built {args.rows:,} rows, seeded as accepted, every row changed: {time.perf_counter() - t:.1f}s")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)

        with Emulator.spawn(keys={KEY: KeySpec(scopes=ALL_SCOPES)}) as emu:
            emu.client.set_faults(latency_ms=args.latency_ms, jitter_ms=10, seed=1)
            print(
                f"emulator latency {args.latency_ms:g} ms (+-10 ms); bulk='auto', bulk_batch_size={BATCH}, bulk_wait=0"
            )
            first = sync_child(db, emu.url, args.chunk_size, args.profile and f"{args.profile}/submit.prof")
            bulk = emu.client.stats()["endpoints"][EndpointName.BULK.value]
            print(
                f"run 1 (submit): {first['bulk_jobs_submitted']:,} jobs submitted with {bulk['requests']:,} bulk "
                f"requests (expected {expected}), {first['awaiting_results']:,} rows awaiting results, "
                f"{first['bulk_jobs_pending']:,} jobs pending; busiest second {bulk['max_window_all']} arrivals "
                f"({bulk['max_window']} accepted; limit {bulk_limit:g}), {bulk['rate_limited']} x 429; "
                f"wall {hms(first['wall_s'])} ({first['wall_s']:.1f}s), cpu {first['cpu_s']:.1f}s, "
                f"peak RSS {first['peak_rss_mb']:.0f} MB; load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )

            # The emulator completes a job delay_s after submission, when it next sees a request.
            deadline = time.monotonic() + 120
            while any(job["status"] not in ("COMPLETED", "FAILED") for job in emu.client.jobs()):
                if time.monotonic() > deadline:
                    raise SystemExit("the emulator's jobs did not finish within 120 s")
                time.sleep(0.5)
            second = sync_child(db, emu.url, args.chunk_size, args.profile and f"{args.profile}/reconcile.prof")
            job_reads = emu.client.stats()["endpoints"][EndpointName.BULK_JOB.value]
            downloads = len(emu.client.results_downloads())
            stored = len(emu.client.attributes())
            print(
                f"run 2 (reconcile): reconciled {second['reconciled']}, {second['unchanged']:,} unchanged, "
                f"{second['awaiting_job']:,} awaiting a job; {job_reads['requests']:,} bulk_job requests (busiest "
                f"second {job_reads['max_window_all']}), {downloads:,} results downloads, "
                f"{second['bulk_jobs_completed']:,} jobs completed; wall {hms(second['wall_s'])} "
                f"({second['wall_s']:.1f}s), cpu {second['cpu_s']:.1f}s, peak RSS {second['peak_rss_mb']:.0f} MB; "
                f"the emulator holds {stored:,} profiles; load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )

    v1_seconds = args.rows / v1_rate
    print(
        f"v1 for the same rows: {args.rows:,} requests at {v1_rate:g}/s = {hms(v1_seconds)} ({v1_seconds:,.0f}s) "
        f"of task time, landed as they go; bulk: {bulk['requests'] + job_reads['requests']:,} requests and "
        f"{hms(first['wall_s'] + second['wall_s'])} of task time over two runs, landed when Attentive processes "
        "the jobs (its targets: 4 h for the first 10,000 records a day, 12 h beyond)"
    )

    ok = (
        bulk["requests"] == (expected_jobs or bulk["requests"])
        and bulk["max_window_all"] <= bulk_limit
        and first["wall_s"] < 300
        and second["reconciled"]["ok"] == args.rows
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
