"""`make demo`: the example DAGs against a local Attentive emulator and a SQLite warehouse.

1. builds ``.demo/warehouse.db`` (customers, shipments, a VIP audience),
2. starts the emulator as a separate process (``attentive-emulator``) with 20 ms of latency,
3. runs ``airflow db migrate``, ``airflow connections test`` and each example DAG with ``airflow dags test``,
4. changes a few warehouse rows and runs the DAGs again, to show that only changes are sent,
5. prints what the emulated Attentive received.

Nothing here talks to the real Attentive API.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, EmulatorProcess, KeySpec

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
BIN = Path(sys.executable).parent
DEMO_KEY = "demo-key"
TODAY = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
# Airflow infers the data interval [day before, day] for a manual `dags test` of an interval timetable.
EVENTS_DATE = TODAY.strftime("%Y-%m-%d")


def phone(i: int) -> str:
    return f"+1415{2000000 + i:07d}"


def build_warehouse(path: Path) -> None:
    rng = random.Random(7)
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE customers (customer_id INTEGER, phone TEXT, email TEXT, loyalty_tier TEXT, ltv NUMERIC);
        CREATE TABLE shipments (order_id TEXT, phone TEXT, email TEXT, shipped_at TEXT, carrier TEXT,
                                tracking_url TEXT);
        CREATE TABLE vip_members (phone TEXT, email TEXT, first_name TEXT);
        """
    )
    customers = []
    for i in range(200):
        number = phone(i)
        if i % 10 == 3:  # national format: normalised to E.164 with default_region="US"
            number = f"(415) {number[5:8]}-{number[8:]}"
        customers.append((i, number, f"customer{i}@example.com", rng.choice(["bronze", "silver", "gold"]), i * 12.5))
    customers.append((999, "call me maybe", None, "gold", 10))  # reported as invalid, never sent
    conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", customers)
    start = TODAY - dt.timedelta(days=1)
    shipments = [
        (
            f"order-{1000 + i}",
            phone(i),
            None,
            (start + dt.timedelta(minutes=37 * i)).strftime("%Y-%m-%d %H:%M:%S"),
            rng.choice(["fedex", "ups", "usps"]),
            f"https://track.example.com/{1000 + i}",
        )
        for i in range(30)
    ]
    conn.executemany("INSERT INTO shipments VALUES (?, ?, ?, ?, ?, ?)", shipments)
    conn.executemany(
        "INSERT INTO vip_members VALUES (?, ?, ?)",
        [(phone(i), f"customer{i}@example.com", f"Vip{i}") for i in range(0, 80, 2)],
    )
    conn.commit()
    conn.close()


def change_warehouse(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id IN (4, 8, 15)")
    conn.execute("DELETE FROM vip_members WHERE phone IN (?, ?)", (phone(0), phone(2)))
    conn.execute("INSERT INTO vip_members VALUES (?, NULL, 'Newcomer')", (phone(101),))
    conn.commit()
    conn.close()


def airflow_env(emulator_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(DEMO / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        AIRFLOW_CONN_ATTENTIVE_DEFAULT=json.dumps(
            {"conn_type": "attentive", "host": emulator_url, "password": DEMO_KEY}
        ),
        AIRFLOW_CONN_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(DEMO / "warehouse.db")}),
    )
    return env


def airflow(env: dict[str, str], *args: str, log_name: str) -> str:
    log = DEMO / "logs" / f"{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print(f"   airflow {' '.join(args)} failed (exit {proc.returncode}); full output in {log}")
        print("\n".join((proc.stdout + proc.stderr).splitlines()[-30:]))
        raise SystemExit(proc.returncode)
    return proc.stdout + proc.stderr


_TABLE = re.compile(r"^.*?(\+-{3,}.*\+|\|.*\|)\s*$")


def summary_table(output: str) -> str:
    """The summary table the operators log at the end of each task."""
    lines = [m.group(1) for line in output.splitlines() if (m := _TABLE.match(line))]
    return "\n".join("      " + line for line in lines) if lines else "      (no summary found)"


def run_dags(env: dict[str, str], label: str) -> None:
    for dag_id, date in (
        ("attentive_loyalty_attributes", TODAY.strftime("%Y-%m-%d")),
        ("attentive_order_shipped_events", EVENTS_DATE),
        ("attentive_vip_sms_list", TODAY.strftime("%Y-%m-%d")),
    ):
        print(f"   $ airflow dags test {dag_id} {date}")
        out = airflow(env, "dags", "test", dag_id, date, log_name=f"{label}-{dag_id}")
        print(summary_table(out))


def report(emu: EmulatorProcess) -> None:
    c = emu.client
    stats = c.stats()
    print("\n== What the emulated Attentive received ==")
    for name in ("attributes", "events", "subscribe", "unsubscribe"):
        e = stats["endpoints"][name]
        print(
            f"   {name:<12} {e['requests']:>4} requests, statuses {e['status']}, busiest second {e['max_window_all']}"
            f"/{e['limit']} allowed"
        )
    attrs = c.attributes()
    sample: Any = attrs.get(phone(4))
    print(
        f"   custom attributes stored for {len(attrs)} subscribers, e.g. {phone(4)[:2]}******{phone(4)[-4:]}: {sample}"
    )
    events = c.events()
    print(f"   {len(events)} custom events stored; duplicates received: {stats['duplicate_events']}")
    if events:
        print(f"   first event: {json.dumps(events[0]['body'])[:200]}")
    print(
        f"   repeat subscribes: {stats['repeat_subscribes']}, repeat unsubscribes: {stats['repeat_unsubscribes']}"
        " (each would have texted someone twice)"
    )
    print(f"   texts Attentive would have sent: {len(c.messages())}")


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    print("== Building the demo warehouse (.demo/warehouse.db) ==")
    build_warehouse(DEMO / "warehouse.db")
    print("== Starting the Attentive emulator ==")
    with Emulator.spawn(
        keys={DEMO_KEY: KeySpec(scopes=ALL_SCOPES, company_name="Demo Outfitters")},
        extra_args=["--latency-ms", "20", "--jitter-ms", "10"],
    ) as emu:
        print(f"   emulator at {emu.url}")
        env = airflow_env(emu.url)
        print("== airflow db migrate ==")
        airflow(env, "db", "migrate", log_name="db-migrate")
        print("== airflow connections test attentive_default ==")
        out = airflow(env, "connections", "test", "attentive_default", log_name="connections-test")
        print("   " + next((line for line in out.splitlines() if "Connect" in line), out.strip()[-200:]))
        print("== First run: everything is new ==")
        run_dags(env, "run1")
        print("== The warehouse changes: 3 tiers upgraded, 2 VIPs leave, 1 joins ==")
        change_warehouse(DEMO / "warehouse.db")
        print("== Second run: only the changes are sent ==")
        run_dags(env, "run2")
        report(emu)
    print(f"\nDone. Logs: {DEMO / 'logs'}; warehouse and sync state: {DEMO / 'warehouse.db'}")


if __name__ == "__main__":
    main()
