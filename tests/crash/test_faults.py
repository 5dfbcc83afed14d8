"""Faults during a run: 5xx answers, dropped connections, hung requests, non-JSON answers, a warehouse error.

A run either finishes with every row accounted for (succeeded, invalid, rejected, or failed and queued for
the next run) or fails the task with everything sent so far recorded; rerunning reaches the same end state as
a fault-free sync, and at no point does the state table claim a row Attentive did not accept.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.emulator.client import EmulatorClient
from tests.helpers.crash import SEED, Launcher, assert_accounted, assert_no_secrets
from tests.helpers.engine import sync_engine, transport
from tests.helpers.objects import event_ids, subs
from tests.helpers.phones import phone
from tests.helpers.records import accepted, stored_event_ids, subscribed_phones
from tests.helpers.warehouse import Warehouse, create_orders, set_members

FAULTS: dict[str, Any] = {
    "error_rate": 0.30,  # 500/502/503, before anything is applied
    "drop_rate": 0.03,  # connection closed before anything is applied
    "drop_after_apply_rate": 0.02,  # applied, then the connection is closed: the answer is lost
    "hang_rate": 0.01,  # no answer until long after the client's timeout
    "hang_s": 3.0,
    "non_json_rate": 0.02,  # a proxy's HTML 502 page
    "latency_ms": 5,
    "jitter_ms": 5,
}
CONNECTION = {"timeout": 1.0, "max_attempts": 4, "max_concurrency": 32}


def under_faults(launcher: Launcher, seed: int) -> EmulatorClient:
    """Turn every fault on (``FAULTS``) for the next runs, which use ``CONNECTION``; return the emulator's client."""
    launcher.set_connection(**CONNECTION)
    launcher.client.set_faults(**FAULTS, seed=seed)
    return launcher.client


def run_until_settled(
    launcher: Launcher, cfg: dict[str, Any], check: Any, *, max_runs: int = 8, allow_in_doubt: bool = False
) -> list[dict]:
    """Rerun until a run finds nothing to send (in-doubt rows aside, if allowed); check invariants after each."""
    summaries = []
    for _ in range(max_runs):
        out = launcher.complete(cfg, expect_rc=None)
        run = launcher.runs[-1]
        if run.rc != 0:
            # Failing is allowed only as "too many failures", after recording every outcome.
            assert out["error"] == "AirflowException" and "max_failed_ratio" in out["message"], out
            summary = out["summary"]
        else:
            summary = out
        summaries.append(summary)
        check(summary)
        statuses = launcher.warehouse.statuses(cfg["sync_id"])
        assert not statuses["pending"], "a finished run left rows pending"
        if sum(summary["planned"].values()) == 0 and (allow_in_doubt or summary["in_doubt"] == 0) and run.rc == 0:
            return summaries
    raise AssertionError(f"did not settle in {max_runs} runs: {summaries[-1]}")


def assert_faults_fired(client: EmulatorClient, endpoints: tuple[str, ...]) -> None:
    seen: Counter[str] = Counter()
    for name in endpoints:
        seen.update(client.stats()["endpoints"][name]["faults"])
    for kind in ("error", "drop", "drop_after_apply", "hang", "non_json"):
        assert seen[kind] > 0, f"no {kind} fault was injected; the test proves nothing about it"


@pytest.mark.slow
def test_events_under_5xx_drops_hangs_and_non_json_are_each_stored_once(
    launcher: Launcher, warehouse: Warehouse
) -> None:
    sync_id = "faults.events"
    rows = 150
    warehouse.execute("CREATE TABLE orders (id INTEGER, phone TEXT, amount REAL)")
    warehouse.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, phone(i), i / 4) for i in range(rows)])
    client = under_faults(launcher, SEED)
    cfg = {
        "object": "events",
        "sync_id": sync_id,
        "sql": "SELECT id, phone, amount FROM orders",
        "primary_key": "id",
        "mapping": {"phone": "phone", "amount": "properties.amount"},
        "options": {"event_type": "Order Shipped", "batch_size": 10},
    }
    ids = event_ids(sync_id, {str(i) for i in range(rows)})

    def check(summary: dict[str, Any]) -> None:
        assert_accounted(summary)
        ok = {k for k, r in warehouse.state(sync_id).items() if r["status"] == "ok"}
        held = {ids[e] for e in stored_event_ids(client)}
        assert ok <= held, "the state claims events Attentive never accepted"

    run_until_settled(launcher, cfg, check, allow_in_doubt=True)
    assert_faults_fired(client, ("events",))
    # At most once: an event whose answer was lost is in doubt, never sent again on the run's own initiative.
    assert client.stats()["duplicate_events"] == 0, "an event was sent twice without resend_in_doubt"
    doubt = {k for k, r in warehouse.state(sync_id).items() if r["status"] == "in_doubt"}
    assert doubt, "the faults left nothing in doubt: this test would prove nothing"
    # The documented remedy once the faults are over: resend what is in doubt, with the same externalEventId.
    client.clear_faults()
    launcher.complete({**cfg, "options": {**cfg["options"], "resend_in_doubt": True}})
    stored = stored_event_ids(client)
    assert set(stored) == set(ids) and max(stored.values()) == 1, "an event was stored twice or never"
    assert {r["status"] for r in warehouse.state(sync_id).values()} == {"ok"}
    assert client.stats()["duplicate_events"] <= len(doubt)


@pytest.mark.slow
def test_attributes_under_5xx_drops_hangs_and_non_json_end_as_the_model(
    launcher: Launcher, warehouse: Warehouse
) -> None:
    sync_id = "faults.attributes"
    rows = 150
    warehouse.execute("CREATE TABLE customers (id INTEGER, phone TEXT, tier TEXT)")
    warehouse.executemany("INSERT INTO customers VALUES (?, ?, ?)", [(i, phone(i), f"t{i % 7}") for i in range(rows)])
    client = under_faults(launcher, SEED + 1)
    cfg = {
        "object": "attributes",
        "sync_id": sync_id,
        "sql": "SELECT id, phone, tier FROM customers",
        "primary_key": "id",
        "options": {"batch_size": 10},
    }
    model = {phone(i): {"tier": f"t{i % 7}"} for i in range(rows)}

    def check(summary: dict[str, Any]) -> None:
        assert_accounted(summary)
        held = client.attributes()
        for key, r in warehouse.state(sync_id).items():
            if r["status"] == "ok":
                assert held.get(phone(int(key))) == model[phone(int(key))], "state claims an upsert that did not land"

    run_until_settled(launcher, cfg, check)
    assert_faults_fired(client, ("attributes",))
    assert client.attributes() == model
    assert {r["status"] for r in warehouse.state(sync_id).values()} == {"ok"}


@pytest.mark.slow
def test_subscriptions_mirror_under_faults_changes_each_membership_once(
    launcher: Launcher, warehouse: Warehouse
) -> None:
    sync_id = "faults.mirror"
    client = under_faults(launcher, SEED + 2)
    cfg = {
        "object": "subscriptions",
        "mode": "mirror",
        "sync_id": sync_id,
        "sql": "SELECT phone FROM members",
        "primary_key": "phone",
        "options": {"sign_up_source_id": "64140", "batch_size": 10, "max_removals": 0.5},
    }
    first = set(range(80))
    second = (first - set(range(0, 80, 8))) | set(range(500, 510))  # 10 leave, 10 join

    def check(summary: dict[str, Any]) -> None:
        state = warehouse.state(sync_id)
        held = subscribed_phones(client)
        for p, r in state.items():
            if r["member"] == "subscribed":
                assert p in held, "state says subscribed; Attentive disagrees"
            if r["member"] == "unsubscribed":
                assert p not in held, "state says unsubscribed; Attentive disagrees"

    for model in (first, second):
        set_members(warehouse, model)
        run_until_settled(launcher, cfg, check)
        assert subscribed_phones(client) == {phone(i) for i in model}
    assert_faults_fired(client, ("subscribe", "unsubscribe", "subscriptions_read"))
    stats = client.stats()
    assert stats["repeat_subscribes"] == 0 and stats["repeat_unsubscribes"] == 0
    subscribes = Counter(r["body"]["user"]["phone"] for r in accepted(client, "subscribe"))
    unsubscribes = Counter(r["body"]["user"]["phone"] for r in accepted(client, "unsubscribe"))
    assert max(subscribes.values()) == 1 and max(unsubscribes.values()) == 1
    assert set(unsubscribes) == {phone(i) for i in first - second}
    state = warehouse.state(sync_id)
    assert {p for p, r in state.items() if r["member"] == "subscribed"} == {phone(i) for i in second}
    for run in launcher.runs:
        assert_no_secrets(run.output, [phone(i) for i in first | second])


@pytest.mark.slow
@pytest.mark.parametrize("storm", ["error_rate", "non_json_rate"])
def test_a_storm_of_5xx_or_html_answers_fails_the_task_with_nothing_claimed(
    launcher: Launcher, warehouse: Warehouse, storm: str
) -> None:
    client = launcher.client
    sync_id = f"faults.storm.{storm}"
    create_orders(warehouse, 40)
    launcher.set_connection(timeout=1.0, max_attempts=2)
    client.set_faults(**{storm: 1.0}, latency_ms=5, seed=SEED)
    cfg = {
        "object": "events",
        "sync_id": sync_id,
        "sql": "SELECT id, phone FROM orders",
        "primary_key": "id",
        "options": {"event_type": "Order Shipped", "batch_size": 10},
    }
    out = launcher.complete(cfg, expect_rc=1)
    assert out["error"] == "AirflowException" and "max_failed_ratio" in out["message"]
    summary = out["summary"]
    assert summary["failed"]["added"] == 40 and summary["rejected"] == 0
    assert "502" in str(summary["errors"]) or "50" in str(summary["errors"])
    assert warehouse.statuses(sync_id) == Counter(failed=40), "every row is queued for the next run"
    assert warehouse.lock(sync_id) is None, "a failed run must release its lock"
    assert client.stats()["events_stored"] == 0

    client.set_faults(latency_ms=5)
    after = launcher.complete(cfg)
    assert after["succeeded"]["added"] == 40
    assert set(stored_event_ids(client).values()) == {1} and client.stats()["events_stored"] == 40


@pytest.mark.slow
def test_warehouse_error_mid_stream_fails_the_task_with_everything_sent_recorded(
    launcher: Launcher, warehouse: Warehouse
) -> None:
    client = launcher.client
    sync_id = "faults.warehouse"
    warehouse.execute("CREATE TABLE orders (id INTEGER, phone TEXT, amount INTEGER)")
    warehouse.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, phone(i), i) for i in range(120)])
    # Pure SQL that fails while the 4th chunk is fetched: abs() of the smallest integer overflows.
    broken = (
        "SELECT id, phone, CASE WHEN id < 75 THEN amount ELSE abs(-9223372036854775807 - 1) END AS amount FROM orders"
    )
    cfg = {
        "object": "events",
        "sync_id": sync_id,
        "sql": broken,
        "primary_key": "id",
        "mapping": {"phone": "phone", "amount": "properties.amount"},
        "options": {"event_type": "Order Shipped", "batch_size": 10, "chunk_size": 20},
    }
    out = launcher.complete(cfg, expect_rc=1)
    # Told without the driver's own object (its text may quote row values), still naming what went wrong.
    assert out["error"] == "WarehouseReadError" and "OperationalError: integer overflow" in out["message"]
    ids = event_ids(sync_id, {str(i) for i in range(120)})
    state = warehouse.state(sync_id)
    sent = {ids[e] for e in stored_event_ids(client)}
    assert warehouse.statuses(sync_id) == Counter(ok=60), "everything sent before the error is recorded"
    assert sent == set(state) == {str(i) for i in range(60)}
    assert warehouse.lock(sync_id) is None

    fixed = launcher.complete({**cfg, "sql": "SELECT id, phone, amount FROM orders"})
    assert fixed["unchanged"] == 60 and fixed["succeeded"]["added"] == 60
    stored = stored_event_ids(client)
    assert set(stored) == set(ids) and max(stored.values()) == 1
    assert client.stats()["duplicate_events"] == 0


def test_member_whose_unsubscribe_failed_and_who_comes_back_is_not_subscribed_again(
    attentive_emulator: Emulator, tmp_path: Path
) -> None:
    """Regression: state ``member=subscribed, status=failed (op removed)`` used to count as "not a member"."""
    client = attentive_emulator.client
    conn = sqlite3.connect(tmp_path / "warehouse.db")

    def sync(members: range) -> dict[str, Any]:
        set_members(conn, members)
        options: dict[str, Any] = {
            "sync_id": "regression.return",
            "mode": "mirror",
            "max_removals": 1.0,
            "max_failed_ratio": 1.0,
        }
        with transport(attentive_emulator.url, max_attempts=2) as sender:
            return sync_engine(subs(), conn, "SELECT phone FROM members", sender=sender, **options).run()

    sync(range(10))
    client.set_faults(error_rate=1.0, endpoints=["unsubscribe"])  # the unsubscribe of member 0 fails
    left = sync(range(1, 10))
    # A 5xx on an unsubscribe is in doubt (it might have been applied); the eligibility check then finds the
    # person still subscribed and records the unsubscribe as failed.
    assert left["in_doubt"] == 1 and left["failed"]["removed"] == 0
    client.clear_faults()
    back = sync(range(10))  # member 0 is back: still subscribed in Attentive, nothing to send
    assert back["requests"] == 0 and back["unchanged"] == 10
    assert client.stats()["repeat_subscribes"] == 0
    assert phone(0) in subscribed_phones(client)
    conn.close()
