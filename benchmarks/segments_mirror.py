"""Segment mirror: N warehouse people into an Attentive segment through v2 member jobs, then a churn, then a no-op.

1. builds a SQLite warehouse with N customers (and, aside, the newcomers of step 4);
2. starts the emulator as a subprocess with 50 ms (+-10 ms) latency on every API call and bulk jobs that
   complete ``--job-delay`` seconds after submission (Attentive takes hours; the wait is not what this measures);
3. mirrors the model into a new segment, each run in a fresh process (its peak RSS is its own) with the engine
   as ``AttentiveSegmentsOperator`` builds it (``mode="mirror"``, ``member_batch_size=10,000``):

   * run 1 (submit), ``bulk_wait=0``: creates the segment, sends ceil(N / 10,000) member adds and ends;
   * run 2 (reconcile): reads each job's status, downloads its results and records every member;

4. churn: ``--churn`` of the people leave the model (spread over it) and as many new ones enter; run 3 waits for
   its jobs (``bulk_wait=600``, the operator's default) and so sends the adds, then the removals, and records both;
   the segment must then hold exactly the model;
5. run 4: the same model again: one segment read, no member request;
6. prints, beside them, what 1,000,000 subscribes would cost at v1's 10 requests/s.

    .venv/bin/python -m benchmarks.segments_mirror [--members 1000000 --churn 0.1 --latency-ms 50]
    .venv/bin/python -m benchmarks.segments_mirror --members 200000 --profile /tmp/seg-prof   # where the time goes

The emulator validates every member request body against the v2 schema when it arrives (about 0.2 s for
10,000 members, one request at a time): that is part of each submitting run's wall time, as a slow API would be.
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
from airflow_provider_attentive.sync.objects.segments import SegmentMembersDelivery, SegmentSpec, SegmentsType
from airflow_provider_attentive.sync.objects.segments.members import MAX_MEMBERS
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.state import StateStore
from benchmarks.bulk_attributes import hms
from benchmarks.child import run_child
from benchmarks.unchanged_rerun import build

__all__ = ["main"]

KEY = "bench-key"
SYNC_ID = "bench.segment"
SEGMENT = "bench_audience"
SQL = "SELECT customer_id, phone, email FROM customers"
CHUNK = 1000  # the operator's default chunk_size
WAIT_S = 600.0  # the operator's default bulk_wait
POLL_S = 1.0  # the operator polls every min(bulk_poll_interval, 1.0) s at first
ADD = EndpointName.SEGMENT_MEMBERS_ADD.value
REMOVE = EndpointName.SEGMENT_MEMBERS_REMOVE.value
JOB = EndpointName.BULK_JOB.value


def sync(db: Path, url: str, wait_s: float) -> dict[str, Any]:
    """One mirror run, built as ``AttentiveSegmentsOperator`` builds it."""
    conn = sqlite3.connect(db)
    try:
        with AttentiveTransport(TransportConfig(base_url=url, api_key=KEY)) as transport:
            obj = SegmentsType(
                segment=SegmentSpec(SEGMENT, "Benchmark audience"),
                primary_key="customer_id",
                mapping=None,
                default_region=None,
            )
            delivery = SegmentMembersDelivery(
                transport, external_id=SEGMENT, batch_size=MAX_MEMBERS, wait_s=wait_s, poll_interval_s=POLL_S
            )
            engine = SyncEngine(
                obj,
                SyncOptions(sync_id=SYNC_ID, mode="mirror", chunk_size=CHUNK, progress_interval_s=30),
                source=SqlSource(conn, SQL, chunk_size=CHUNK),
                state=StateStore(conn),
                sender=transport,
                delivery=delivery,
            )
            return engine.run()
    finally:
        conn.close()


# The summary fields each run reports.
KEEP = (
    "rows_read",
    "unchanged",
    "planned",
    "succeeded",
    "failed",
    "rejected",
    "requests",
    "segment",
    "added",
    "removed",
    "kept_shared",
    "blocked_removals",
    "bulk_jobs_submitted",
    "bulk_jobs_pending",
    "bulk_jobs_completed",
    "awaiting_results",
    "reconciled",
    "errors",
)


def child(db: str, url: str, wait_s: str, profile: str) -> None:
    """Runs in a fresh process so that its peak RSS is the run's own; prints one JSON line."""
    profiler = cProfile.Profile() if profile != "-" else None
    started, cpu_started = time.perf_counter(), time.process_time()
    if profiler is None:
        summary = sync(Path(db), url, float(wait_s))
    else:
        summary = profiler.runcall(sync, Path(db), url, float(wait_s))
        profiler.dump_stats(profile)
    cost = {
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu_started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps({**cost, **{k: summary.get(k) for k in KEEP}}, default=str))


def sync_child(db: Path, url: str, wait_s: float, profile: str | None) -> dict[str, Any]:
    return run_child("benchmarks.segments_mirror", str(db), url, str(wait_s), profile or "-")


def set_aside_newcomers(db: Path, members: int) -> None:
    """The rows beyond ``members`` wait in ``newcomers`` until the churn (their phones are distinct from all)."""
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE newcomers AS SELECT * FROM customers WHERE customer_id >= ?", (members,))
    conn.execute("DELETE FROM customers WHERE customer_id >= ?", (members,))
    conn.commit()
    conn.close()


def churn(db: Path, leavers: int) -> None:
    """``leavers`` people, spread over the model by a fixed pseudo-random order, leave; the newcomers enter."""
    conn = sqlite3.connect(db)
    conn.execute(
        "DELETE FROM customers WHERE customer_id IN "
        "(SELECT customer_id FROM customers ORDER BY (customer_id * 48271) % 2147483647 LIMIT ?)",
        (leavers,),
    )
    conn.execute("INSERT INTO customers SELECT * FROM newcomers")
    conn.commit()
    conn.close()


def model_phones(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {phone for (phone,) in conn.execute("SELECT phone FROM customers")}
    finally:
        conn.close()


class Counters:
    """The emulator's per-endpoint request counts, as differences between two reads."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.before = self.read()

    def read(self) -> dict[str, Any]:
        endpoints = self.client.stats()["endpoints"]
        return {
            "by_endpoint": {name: st["requests"] for name, st in endpoints.items()},
            "rate_limited": sum(st["rate_limited"] for st in endpoints.values()),
            "downloads": len(self.client.results_downloads()),
            "endpoints": endpoints,
        }

    def step(self) -> dict[str, Any]:
        """What the emulator saw since the last step: requests per endpoint, all of them, 429s, downloads."""
        now = self.read()
        by_endpoint = {
            name: n - self.before["by_endpoint"].get(name, 0)
            for name, n in now["by_endpoint"].items()
            if n - self.before["by_endpoint"].get(name, 0)
        }
        out = {
            "requests": by_endpoint,
            "all_requests": sum(by_endpoint.values()),
            "rate_limited": now["rate_limited"] - self.before["rate_limited"],
            "results_downloads": now["downloads"] - self.before["downloads"],
            # The emulator's busiest one-second window since it started (the first run's own, for run 1).
            "busiest_second_adds_since_start": now["endpoints"].get(ADD, {}).get("max_window_all", 0),
        }
        self.before = now
        return out


def wait_for_jobs(client: Any, timeout_s: float = 300) -> None:
    """The emulator completes a job when it sees a request after the job's delay: these reads are such requests."""
    deadline = time.monotonic() + timeout_s
    while any(job["status"] not in ("COMPLETED", "FAILED") for job in client.jobs()):
        if time.monotonic() > deadline:
            raise SystemExit(f"the emulator's jobs did not finish within {timeout_s:g} s")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000, help="people in the model")
    parser.add_argument("--churn", type=float, default=0.1, help="share of the model that leaves (as many enter)")
    parser.add_argument("--latency-ms", type=float, default=50, help="the emulator's latency on every API call")
    parser.add_argument("--job-delay", type=float, default=0.2, help="seconds until an emulated job completes")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="write a cProfile of each run to DIR (run1_submit.prof ... run4_unchanged.prof)",
    )
    parser.add_argument("--child", nargs=4, metavar=("DB", "URL", "WAIT", "PROFILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.members < 1 or not 0 <= args.churn <= 0.2:
        # Above 0.2 the mirror's default max_removals blocks the removals.
        parser.error("--members must be positive and --churn between 0 and 0.2")

    from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, KeySpec

    movers = round(args.members * args.churn)
    expected_adds = math.ceil(args.members / MAX_MEMBERS)
    expected_churn = math.ceil(movers / MAX_MEMBERS)
    subscribe_rate = ENDPOINTS[EndpointName.SUBSCRIBE].default_rate
    machine = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "load_average_start": os.getloadavg()[0]}
    results: dict[str, Any] = {"members": args.members, "churn": movers, "latency_ms": args.latency_ms}

    def profile(name: str) -> str | None:
        return f"{args.profile}/{name}.prof" if args.profile else None

    with tempfile.TemporaryDirectory(prefix="attentive-bench-") as tmp:
        db = Path(tmp) / "warehouse.db"
        t = time.perf_counter()
        build(db, args.members + movers)
        set_aside_newcomers(db, args.members)
        print(f"built {args.members:,} people (+{movers:,} newcomers aside): {time.perf_counter() - t:.1f}s")
        print(f"python {machine['python']}, {machine['cpus']} CPUs, load average {machine['load_average_start']:.2f}")
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)

        with Emulator.spawn(keys={KEY: KeySpec(scopes=ALL_SCOPES)}) as emu:
            client = emu.client
            client.set_faults(latency_ms=args.latency_ms, jitter_ms=10, seed=1)
            client.set_job_settings(delay_s=args.job_delay, pending_s=min(0.05, args.job_delay))
            print(
                f"emulator latency {args.latency_ms:g} ms (+-10 ms), jobs complete {args.job_delay:g} s after "
                f"submission; mode='mirror', member_batch_size={MAX_MEMBERS:,}",
                flush=True,
            )
            counters = Counters(client)

            def step(name: str, wait_s: float) -> dict[str, Any]:
                summary = sync_child(db, emu.url, wait_s, profile(name))
                seen = counters.step()
                result = {**summary, **seen, "load_average": os.getloadavg()[0]}
                results[name] = result
                print(f"{name}: {json.dumps(result, default=str)}", flush=True)
                return result

            submit = step("run1_submit", 0)
            sizes = [job["records"] for job in client.jobs() if job["kind"] == ADD]
            results["members_per_add_job"] = {"min": min(sizes, default=0), "max": max(sizes, default=0)}
            wait_for_jobs(client)
            reconcile = step("run2_reconcile", 0)
            first_ok = len(client.segments()[SEGMENT]["members"]) == args.members

            churn(db, movers)
            changed = step("run3_churn", WAIT_S)
            members = set(client.segments()[SEGMENT]["members"])
            model = model_phones(db)
            exact = members == model
            results["segment_equals_model"] = exact
            results["segment_size"] = len(members)

            rerun = step("run4_unchanged", WAIT_S)
            messages = len(client.messages())
            subscribe_requests = sum(
                client.stats()["endpoints"].get(name.value, {}).get("requests", 0)
                for name in (EndpointName.SUBSCRIBE, EndpointName.UNSUBSCRIBE)
            )
            results["messages"] = messages
            results["subscription_requests"] = subscribe_requests
    machine["load_average_end"] = os.getloadavg()[0]
    results["machine"] = machine

    subscribe_s = args.members / subscribe_rate
    results["subscriptions_equivalent"] = {"requests": args.members, "rate": subscribe_rate, "seconds": subscribe_s}

    def member_requests(result: dict[str, Any]) -> str:
        adds, removes = result["requests"].get(ADD, 0), result["requests"].get(REMOVE, 0)
        return f"{adds} adds + {removes} removes"

    def wall(result: dict[str, Any]) -> str:
        return f"{hms(result['wall_s'])} ({result['wall_s']:.1f} s)"

    busiest = submit["busiest_second_adds_since_start"]
    per_job = results["members_per_add_job"]
    sizes_text = f"{per_job['max']:,}" if per_job["min"] == per_job["max"] else f"{per_job['min']:,}-{per_job['max']:,}"
    rows = [
        (
            f"1. first mirror, submit ({args.members:,} members, bulk_wait=0)",
            wall(submit),
            f"{member_requests(submit)} (expected {expected_adds}), {sizes_text} members each; {submit['all_requests']} in all",
            f"busiest second {busiest} adds (limit 100), {submit['rate_limited']} x 429, "
            f"peak RSS {submit['peak_rss_mb']:.0f} MB, cpu {submit['cpu_s']:.0f} s",
        ),
        (
            "1. first mirror, reconcile (next run)",
            wall(reconcile),
            f"{reconcile['requests'].get(JOB, 0)} job reads + {reconcile['results_downloads']} results downloads; "
            f"{reconcile['all_requests']} API requests in all",
            f"{reconcile['added']:,} added; segment holds {args.members:,}: {first_ok}; "
            f"peak RSS {reconcile['peak_rss_mb']:.0f} MB",
        ),
        (
            f"2. churn {args.churn:.0%}: {movers:,} leave, {movers:,} enter (bulk_wait=600)",
            wall(changed),
            f"{member_requests(changed)} (expected {expected_churn} + {expected_churn}); "
            f"{changed['requests'].get(JOB, 0)} job reads, {changed['results_downloads']} downloads; "
            f"{changed['all_requests']} in all",
            f"{changed['added']:,} added, {changed['removed']:,} removed, {changed['rate_limited']} x 429; segment == "
            f"model: {exact} ({len(members):,}); peak RSS {changed['peak_rss_mb']:.0f} MB",
        ),
        (
            "3. rerun, nothing changed",
            wall(rerun),
            f"{member_requests(rerun)}; {rerun['all_requests']} in all ({', '.join(rerun['requests'])})",
            f"{rerun['unchanged']:,} unchanged, peak RSS {rerun['peak_rss_mb']:.0f} MB",
        ),
        (
            f"subscriptions instead ({args.members:,} subscribes at {subscribe_rate:g}/s)",
            f"{hms(subscribe_s)} ({subscribe_s:,.0f} s)",
            f"{args.members:,}",
            "one text per person (a subscribe messages them); a segment texts no one",
        ),
    ]
    print()
    print("| step | task time | requests | notes |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"\nemulator: {args.latency_ms:g} ms (+-10 ms) latency per call; every member request body is validated "
        "against the v2 schema on arrival (~0.2 s per 10,000 members, one at a time); jobs complete "
        f"{args.job_delay:g} s after submission. {messages} messages, {subscribe_requests} subscription requests. "
        f"{machine['cpus']} CPUs, load average {machine['load_average_start']:.2f} at start, "
        f"{machine['load_average_end']:.2f} at end."
    )
    print(json.dumps(results, default=str))

    ok = (
        submit["requests"].get(ADD, 0) == expected_adds
        and busiest <= 100
        and first_ok
        and exact
        and changed["requests"].get(ADD, 0) == expected_churn
        and changed["requests"].get(REMOVE, 0) == expected_churn
        and rerun["requests"].get(ADD, 0) == rerun["requests"].get(REMOVE, 0) == 0
        and messages == 0
        and subscribe_requests == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
