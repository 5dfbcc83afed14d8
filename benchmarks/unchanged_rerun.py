"""Diff speed and memory: an unchanged re-run over N rows in SQLite, and the CPU cost of a changed row.

1. builds a SQLite warehouse with N customers (phone, email, tier, lifetime value);
2. seeds the sync state with a first run through an instant in-process sender (sending N requests at
   Attentive's 150/s would take hours, and the first run is not what this measures);
3. re-runs the sync unchanged in a fresh process, against the emulator, through the real transport, and
   reports wall time, peak RSS (the whole process, Airflow-free) and the number of requests (must be 0);
4. changes a share of rows and re-runs with the instant sender to get the engine's CPU cost per changed row
   (read, hash, look up, validate + normalise the phone, build the payload, write intent + outcome + log),
   network waits excluded.

    .venv/bin/python -m benchmarks.unchanged_rerun --rows 1000000
    .venv/bin/python -m benchmarks.unchanged_rerun --rows 200000 --changed 0.5   # a steadier per-row cost

The per-changed-row figure is a difference of two run totals, so it is steadier when changed rows are a
large share of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from airflow_provider_attentive.client import Request, RequestOutcome, Result
from airflow_provider_attentive.sync.engine import SyncEngine, SyncOptions
from airflow_provider_attentive.sync.objects import AttributesType
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.state import StateStore

SQL = "SELECT customer_id, phone, email, loyalty_tier, ltv FROM customers"


class InstantSender:
    """Accepts every request at once: isolates the engine's own cost from the network and rate limits."""

    def send_many(
        self, endpoint_name: str, requests: Iterable[Request], *, window: int | None = None
    ) -> Iterator[Result]:
        for r in requests:
            yield Result(r.key, endpoint_name, RequestOutcome.OK, 200, {}, None, 1, 0, 0.0)


def build(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, phone TEXT, email TEXT, loyalty_tier TEXT, ltv REAL)"
    )
    tiers = ("bronze", "silver", "gold")
    batch = 50_000
    for start in range(0, rows, batch):
        conn.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?, ?)",
            (
                (i, f"+1415{2000000 + i % 8000000:07d}", f"c{i}@example.com", tiers[i % 3], i * 0.25)
                for i in range(start, min(rows, start + batch))
            ),
        )
    conn.commit()
    conn.close()


def run(db: Path, sender: Any, **options: Any) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    try:
        obj = AttributesType(primary_key="customer_id", mapping=None, default_region=None)
        engine = SyncEngine(
            obj,
            SyncOptions(sync_id="bench", chunk_size=2000, batch_size=1000, progress_interval_s=30, **options),
            source=SqlSource(conn, SQL, chunk_size=2000),
            state=StateStore(conn),
            sender=sender,
        )
        return engine.run()
    finally:
        conn.close()


def seed_state(db: Path) -> int:
    """Write, for every row, the state a successful first run leaves: status ok with the row's hash."""
    conn = sqlite3.connect(db)
    store = StateStore(conn)
    store.ensure_tables()
    obj = AttributesType(primary_key="customer_id", mapping=None, default_region=None)
    source = SqlSource(conn, SQL, chunk_size=50_000)
    total = 0
    for columns, rows in source.stream():
        if not obj.columns:
            obj.configure(columns)
        batch = [("bench", obj.key_of(r), obj.row_hash(r), obj.row_hash(r), "ok", "added", "seed") for r in rows]
        conn.executemany(
            f"INSERT INTO {store.state_table} (sync_id, pk, row_hash, attempt_hash, status, op, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            batch,
        )
        total += len(batch)
    conn.commit()
    conn.close()
    return total


def rerun_child(db: str, url: str) -> None:
    """Runs in a fresh process so its peak RSS is the re-run's own."""
    from airflow_provider_attentive.client import AttentiveTransport, TransportConfig

    with AttentiveTransport(TransportConfig(base_url=url, api_key="bench-key")) as transport:
        t0 = time.perf_counter()
        c0 = time.process_time()
        summary = run(Path(db), transport, check_primary_key=True)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss_mb": peak_mb,
                "requests": summary["requests"],
                "unchanged": summary["unchanged"],
                "rows_read": summary["rows_read"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of rows changed for the CPU-cost pass")
    parser.add_argument(
        "--seed",
        choices=("engine", "direct"),
        default="engine",
        help="engine: a first run through an instant sender; direct: write the accepted hashes straight into the "
        "state table (much faster for 10M rows; what is measured is the re-run either way)",
    )
    parser.add_argument("--child", nargs=2, metavar=("DB", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rerun_child(*args.child)
        return

    from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, KeySpec

    with tempfile.TemporaryDirectory(prefix="attentive-bench-") as tmp:
        db = Path(tmp) / "warehouse.db"
        t = time.perf_counter()
        build(db, args.rows)
        print(f"built {args.rows:,} rows in {time.perf_counter() - t:.1f}s")
        t = time.perf_counter()
        c0 = time.process_time()
        if args.seed == "engine":
            seeded = run(db, InstantSender(), log_retention_days=None)["succeeded"]["added"]
            first_cpu = time.process_time() - c0
            print(
                f"first run (every row new, instant sender): {seeded:,} rows in {time.perf_counter() - t:.1f}s, "
                f"engine CPU per sent row {first_cpu / seeded * 1e6:.0f} us"
            )
        else:
            seeded = seed_state(db)
            print(f"seeded state (direct): {seeded:,} rows in {time.perf_counter() - t:.1f}s")

        with Emulator.spawn(keys={"bench-key": KeySpec(scopes=ALL_SCOPES)}) as emu:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(db), emu.url],
                capture_output=True,
                text=True,
                check=True,
                env=dict(os.environ),
            )
            rerun = json.loads(out.stdout.strip().splitlines()[-1])
            emu_requests = emu.client.stats()["endpoints"]["attributes"]["requests"]
        print(
            f"unchanged re-run: {rerun['rows_read']:,} rows, {rerun['unchanged']:,} unchanged, "
            f"{rerun['requests']} requests (emulator saw {emu_requests}), wall {rerun['wall_s']:.1f}s, "
            f"cpu {rerun['cpu_s']:.1f}s, peak RSS {rerun['peak_rss_mb']:.0f} MB"
        )

        # The marginal cost of a changed row: a run with a share of rows changed minus the same run with
        # nothing changed (same scans, lock, pruning). Three rounds, each changing other rows; the median.
        changed = max(1, int(args.rows * args.changed))
        per_row: list[float] = []
        for round_ in range(3):
            c0 = time.process_time()
            run(db, InstantSender(), check_primary_key=False)
            base_cpu = time.process_time() - c0
            conn = sqlite3.connect(db)
            conn.execute(
                "UPDATE customers SET loyalty_tier = ? WHERE customer_id % ? = ?",
                (f"tier-{round_}", args.rows // changed, round_ % (args.rows // changed)),
            )
            conn.commit()
            conn.close()
            c0 = time.process_time()
            changed_run = run(db, InstantSender(), check_primary_key=False)
            cpu = time.process_time() - c0
            n = changed_run["succeeded"]["changed"]
            per_row.append((cpu - base_cpu) / n * 1e6 if n else float("nan"))
        print(
            f"changed rows: {n:,} per round sent through the instant sender; engine CPU per changed row "
            f"{statistics.median(per_row):.0f} us (median of {', '.join(f'{x:.0f}' for x in per_row)})"
        )


if __name__ == "__main__":
    main()
