"""`make demo`: the example DAGs against a local Attentive emulator and a SQLite warehouse.

1. builds ``.demo/warehouse.db`` (customers with a loyalty tier, shipments, a VIP audience),
2. starts the emulator as a separate process (``attentive-emulator``) with 20 ms of latency and bulk jobs that
   complete in half a second (Attentive takes hours),
3. runs ``airflow db migrate``, ``airflow connections test`` and each example DAG with ``airflow dags test``,
   printing each task's summary with what its figures say, and once a legend of every row of the table,
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
    customers: list[tuple[int, str, str | None, str, float]] = []
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
    # Four tiers upgraded: customer 15 joins the gold segment, customer 3 (gold until now) leaves it.
    conn.execute("UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id IN (3, 4, 8)")
    conn.execute("UPDATE customers SET loyalty_tier = 'gold' WHERE customer_id = 15")
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


# The log record's context (logger name, source line) that structlog appends to the record's last line.
_RECORD_END = re.compile(r"^(.*?)\s+\[[\w.]+\](?:\s+\w+=\S+)*\s*$")
_ROW = re.compile(r"^\| (.+?) +\| (.*?) *\|$")

# What each line of the summary table means, for the rows a run shows.
LEGEND = {
    "sync": "the sync's id, what it writes and its mode",
    "read": "rows the model (the task's SQL) returned",
    "unchanged": "rows an earlier run sent that have not changed since: nothing sent for them",
    "added": "rows new to this sync: accepted (ok) / failed / needed a request (planned)",
    "changed": "rows whose data changed since Attentive last accepted them",
    "removed": "members a mirror unsubscribed (a list) or took out (a segment) because they left the model",
    "retired": "a segment member's former identifiers, removed once their new ones were added",
    "invalid": "rows that cannot be sent (bad phone, no identifier): never sent; reasons under the table",
    "sent with warnings": "rows sent, but not as written (an invalid email dropped beside a valid phone)",
    "rejected": "rows Attentive refused (4xx): not tried again until their data changes",
    "rejected before, not resent": "rows refused in an earlier run, data unchanged (counted in unchanged)",
    "in doubt": "rows an interrupted run may have delivered: not resent unless resend_in_doubt=True",
    "remaining": "rows left for the next run by max_rows_per_run, max_runtime or a stopped run",
    "stale": "events older than 12 hours: Attentive stores them but starts no journey; skip_stale=True drops them",
    "ignored changes": "events already delivered whose row changed since: an event goes out once, ever",
    "already subscribed": "people Attentive had subscribed already (a sign-up form, another sync): left alone",
    "shared phones": "rows whose phone an earlier row has: one person, subscribed once",
    "names written": "first names written as attributes after the subscribe",
    "nothing to send": "rows whose attributes are all NULL",
    "blocked removals": "removals a guard stopped (an empty model, more than max_removals)",
    "held removals": "members whose phone could not be read this run: kept, not unsubscribed",
    "earlier jobs' rows": "rows an earlier run sent in bulk jobs that finished since: their outcome, read now",
    "segment": "what the run did to the segment itself: created, updated (its name or description), unchanged",
    "retired identifiers": "former identifiers of members removed from the segment (after their new ones landed)",
    "kept shared": "removals not sent: someone who stays in the segment holds one of those identifiers",
    "bulk jobs submitted": "member jobs this run sent (up to 10,000 people each)",
    "bulk jobs completed": "jobs whose results this run read, earlier runs' included",
    "bulk jobs pending": "jobs still running when the run ended: the next run reads their results",
    "awaiting results": "rows in this run's jobs not yet finished: neither resent nor counted as done",
    "requests": "HTTP requests the sync sent, its checks included (not the GET /v1/me key check before it)",
    "retries": "requests sent again after a 5xx, a timeout or a dropped connection",
    "throttled": "429 answers from Attentive's rate limit, waited out and sent again",
    "duration": "how long the sync took",
}


def summary_record(output: str) -> list[str]:
    """The summary the operators log at the end of each task: the table and the lines under it."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.endswith("Attentive sync summary:")), None)
    if start is None:
        return []
    record = []
    for line in lines[start + 1 :]:
        end = _RECORD_END.match(line)
        record.append(end.group(1) if end else line)
        if end:
            break
    return record


def figures(record: list[str]) -> dict[str, str]:
    """The table's rows as ``{label: value}``."""
    return {m.group(1): m.group(2) for line in record if (m := _ROW.match(line))}


def ok(value: str) -> int:
    """The ``ok`` count of an ``N ok / N failed / N planned`` cell."""
    return int(value.split()[0])


def what_it_shows(dag_id: str, label: str, f: dict[str, str]) -> list[str]:
    """A newcomer's reading of one run's figures."""
    first = label == "run1"
    if dag_id == "attentive_loyalty_attributes":
        if first:
            return [
                f"{f['read']} customers read; {ok(f['added'])} sent, one POST /v1/attributes/custom each (the 20 "
                f"national-format phones, (415) ..., went out as E.164 thanks to default_region='US'); "
                f"{f['invalid']} invalid: its phone is not a number, so it was never sent (reason above)."
            ]
        return [
            f"{ok(f['changed'])} changed (the upgraded tiers) and {f['unchanged']} unchanged: only the changes "
            f"were sent ({f['requests']} requests); the invalid row is reported again until it is fixed."
        ]
    if dag_id == "attentive_order_shipped_events":
        if first:
            lines = [f"{ok(f['added'])} 'Order Shipped' events, the shipments of yesterday's data interval."]
            if f.get("stale", "0") != "0":
                lines.append(
                    f"{f['stale']} of them stale: shipped more than 12 hours ago, so they are sent and stored but "
                    "trigger no journey; a DAG that wants only fresh events sets skip_stale=True."
                )
            return lines
        return [f"the same {f['read']} shipments: all unchanged, nothing sent (each event goes out once, ever)."]
    if dag_id == "attentive_vip_gold_segment":
        if first:
            return [
                f"{ok(f['added'])} gold customers added to segment vip_gold, created by this first run: "
                f"{f['requests']} requests (the segment's read and create, one member request for up to 10,000 "
                f"people, and the job's status reads); nobody was texted. {f['invalid']} invalid (the garbage "
                "phone, no email)."
            ]
        return [
            f"{ok(f['added'])} joined the gold tier and {ok(f['removed'])} left it: one add job and one remove "
            f"job; {f['unchanged']} unchanged, nothing sent for them."
        ]
    if first:
        return [
            f"{ok(f['added'])} VIPs subscribed. {f['requests']} requests: per person a check that they are not "
            "subscribed already (GET /v1/subscriptions), the subscribe, and their first name as an attribute."
        ]
    return [
        f"{ok(f['removed'])} VIPs left the model and were unsubscribed (no confirmation text), {ok(f['added'])} "
        f"joined; {f['unchanged']} unchanged, nothing sent for them."
    ]


def run_dags(env: dict[str, str], label: str) -> None:
    shown: dict[str, None] = {}
    for dag_id, date in (
        ("attentive_loyalty_attributes", TODAY.strftime("%Y-%m-%d")),
        ("attentive_order_shipped_events", EVENTS_DATE),
        ("attentive_vip_sms_list", TODAY.strftime("%Y-%m-%d")),
        ("attentive_vip_gold_segment", TODAY.strftime("%Y-%m-%d")),
    ):
        print(f"   $ airflow dags test {dag_id} {date}")
        out = airflow(env, "dags", "test", dag_id, date, log_name=f"{label}-{dag_id}")
        record = summary_record(out)
        print("\n".join("      " + line for line in record) if record else "      (no summary found)")
        f = figures(record)
        if f:
            for line in what_it_shows(dag_id, label, f):
                print(f"   -> {line}")
        shown.update(dict.fromkeys(f))
    if label == "run1":
        print("   How to read the tables (README.md, 'Watching a sync', has the rest):")
        rows = [name for name in LEGEND if name in shown]
        width = max(len(name) for name in rows)
        for name in rows:
            print(f"      {name.ljust(width)}  {LEGEND[name]}")


ENDPOINTS = (
    ("me", "the connection test, and each sync's key check"),
    ("attributes", "customer attributes, and the VIPs' first names"),
    ("events", "Order Shipped events"),
    ("subscriptions_read", "is this VIP subscribed already?"),
    ("subscribe", "VIPs who joined"),
    ("unsubscribe", "VIPs who left"),
    ("segment_read", "does segment vip_gold exist, under its name?"),
    ("segment_create", "segment vip_gold, created by its first run"),
    ("segment_members_add", "gold customers who joined the segment"),
    ("segment_members_remove", "gold customers who left it"),
    ("bulk_job", "the member jobs' status, read while the task waited"),
)


def report(emu: EmulatorProcess) -> None:
    c = emu.client
    stats = c.stats()
    print("\n== What the emulated Attentive received (its own counts: GET /_emulator/stats) ==")
    print(
        "   per endpoint: requests, their HTTP statuses, and the busiest second (the most requests that arrived"
        " within one second) against Attentive's limit per second"
    )
    for name, purpose in ENDPOINTS:
        e = stats["endpoints"][name]
        print(
            f"   {name:<22} {e['requests']:>4} requests, statuses {e['status']}, busiest second {e['max_window_all']}"
            f"/{e['limit']} allowed  ({purpose})"
        )
    attrs = c.attributes()
    sample: Any = attrs.get(phone(4))
    print(
        f"   custom attributes stored for {len(attrs)} subscribers, e.g. {phone(4)[:2]}******{phone(4)[-4:]}: {sample}"
    )
    events = c.events()
    print(f"   {len(events)} custom events stored; duplicates received: {stats['duplicate_events']}")
    segment = c.segments().get("vip_gold")
    if segment is not None:
        print(f"   segment vip_gold ({segment['name']!r}): {len(segment['members'])} members")
    if events:
        print(f"   first event: {json.dumps(events[0]['body'])[:200]}")
    print(
        f"   repeat subscribes: {stats['repeat_subscribes']}, repeat unsubscribes: {stats['repeat_unsubscribes']}"
        " (each would have texted someone twice)"
    )
    print(
        f"   texts Attentive would have sent: {len(c.messages())} (a 'Reply Y' double opt-in text per new subscriber;"
        " the unsubscribes asked for none, and joining or leaving a segment texts nobody)"
    )


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    print("== Building the demo warehouse (.demo/warehouse.db) ==")
    build_warehouse(DEMO / "warehouse.db")
    print("== Starting the Attentive emulator ==")
    with Emulator.spawn(
        keys={DEMO_KEY: KeySpec(scopes=ALL_SCOPES, company_name="Demo Outfitters")},
        # Attentive completes member jobs within hours; the emulator's, in half a second, so the segment task's
        # bulk_wait sees them land and the demo shows their outcome in the first run.
        extra_args=["--latency-ms", "20", "--jitter-ms", "10", "--job-delay-s", "0.5"],
    ) as emu:
        print(f"   emulator at {emu.url}")
        env = airflow_env(emu.url)
        print("== airflow db migrate ==")
        airflow(env, "db", "migrate", log_name="db-migrate")
        print("== airflow connections test attentive_default ==")
        out = airflow(env, "connections", "test", "attentive_default", log_name="connections-test")
        print("   " + next((line for line in out.splitlines() if "Connect" in line), out.strip()[-200:]))
        print(
            "   (the hook called GET /v1/me with the demo key; the command needs AIRFLOW__CORE__TEST_CONNECTION=Enabled)"
        )
        print("== First run: everything is new ==")
        run_dags(env, "run1")
        print("== The warehouse changes: 4 tiers upgraded (1 into gold, 1 out of it), 2 VIPs leave, 1 joins ==")
        change_warehouse(DEMO / "warehouse.db")
        print("== Second run: only the changes are sent ==")
        run_dags(env, "run2")
        report(emu)
    print(f"\nDone. Each run's full output: {DEMO / 'logs'}.")
    print(
        f"The syncs' state and per-row log are tables in the warehouse, {DEMO / 'warehouse.db'}: attentive_sync_state"
        " (what Attentive last accepted, per key) and attentive_sync_log (every outcome, keys masked)."
    )


if __name__ == "__main__":
    main()
