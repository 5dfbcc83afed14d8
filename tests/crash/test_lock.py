"""Two runs of one sync never send at once; a killed holder's lock expires and the next run proceeds."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.errors import SyncLockedError
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.state import StateStore
from tests.helpers.crash import Launcher, rng_for
from tests.helpers.engine import sync_engine, transport
from tests.helpers.objects import event_ids, events
from tests.helpers.records import accepted, accepted_event_ids, request_count, stored_event_ids
from tests.helpers.warehouse import Warehouse, create_orders

ROWS = 300  # about 2 s of sending at Attentive's 150 requests/s


def events_config(sync_id: str, *, lock_wait: float, lock_ttl_s: float = 30.0) -> dict[str, Any]:
    return {
        "object": "events",
        "sync_id": sync_id,
        "sql": "SELECT id, phone FROM orders",
        "primary_key": "id",
        "options": {"event_type": "Order Shipped", "batch_size": 10, "lock_wait": lock_wait},
        "engine": {"lock_ttl_s": lock_ttl_s},
    }


def all_sent_once(launcher: Launcher, sync_id: str, n: int = ROWS) -> None:
    expected = set(event_ids(sync_id, (str(i) for i in range(n))))
    sent = accepted_event_ids(launcher.client)
    assert set(sent) == expected and max(sent.values()) == 1, "an event was sent twice or not at all"
    assert launcher.client.stats()["duplicate_events"] == 0
    assert set(stored_event_ids(launcher.client)) == expected


@pytest.mark.slow
def test_three_runs_started_together_only_one_sends(launcher: Launcher, warehouse: Warehouse) -> None:
    create_orders(warehouse, ROWS)
    cfg = events_config("lock.together", lock_wait=0)
    runs = [launcher.start(cfg) for _ in range(3)]
    codes = sorted(run.wait() for run in runs)
    assert codes == [0, 1, 1], [run.output[-2000:] for run in runs]
    winner = next(run for run in runs if run.rc == 0)
    assert winner.result["succeeded"]["added"] == ROWS
    for loser in (run for run in runs if run.rc == 1):
        out = loser.result
        assert out["error"] == "AirflowException" and out["summary"] is None
        assert "is locked by" in out["message"] and "another run of this sync is in progress" in out["message"]
    all_sent_once(launcher, cfg["sync_id"])
    assert warehouse.lock(cfg["sync_id"]) is None


@pytest.mark.slow
def test_a_second_plain_process_waits_for_the_first_then_finds_nothing_to_send(
    launcher: Launcher, warehouse: Warehouse
) -> None:
    """Both runs are plain ``python -m tests.crash.runner '<json>'`` processes, started at the same time."""
    create_orders(warehouse, ROWS)
    cfg = events_config("lock.wait", lock_wait=60)
    first, second = launcher.start(cfg, exec=True), launcher.start(cfg, exec=True)
    assert first.wait() == 0 and second.wait() == 0, first.output[-2000:] + second.output[-2000:]
    summaries = sorted((first.result, second.result), key=lambda s: s["requests"])
    assert summaries[0]["requests"] == 0 and summaries[0]["unchanged"] == ROWS, "the waiting run sent something"
    assert summaries[1]["succeeded"]["added"] == ROWS
    all_sent_once(launcher, cfg["sync_id"])


@pytest.mark.slow
def test_a_killed_holders_lock_blocks_until_it_expires_then_the_next_run_proceeds(
    launcher: Launcher, warehouse: Warehouse, request: pytest.FixtureRequest
) -> None:
    create_orders(warehouse, ROWS)
    sync_id = "lock.killed"
    ttl = 3.0
    killed = launcher.kill_during(
        events_config(sync_id, lock_wait=0, lock_ttl_s=ttl), rng_for(request), endpoint="events"
    )
    assert killed.killed
    lock = warehouse.lock(sync_id)
    assert lock is not None, "a SIGKILLed run cannot release its lock"
    expires = dt.datetime.strptime(lock[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp()
    pending = warehouse.statuses(sync_id)["pending"]
    time.sleep(0.3)  # requests that had arrived before the kill finish their (emulated) latency
    sent_before = len(accepted(launcher.client, "events"))
    arrived_before = request_count(launcher.client, "events")

    # While the dead holder's lock is live, a run that will not wait fails clearly and sends nothing.
    assert time.time() < expires - 0.5
    impatient = launcher.start(events_config(sync_id, lock_wait=0))  # start(): complete() waits for expiry
    assert impatient.wait() == 1, impatient.output[-3000:]
    out = impatient.result
    assert out["error"] == "AirflowException" and "is locked by" in out["message"] and "lock expires" in out["message"]
    assert request_count(launcher.client, "events") == arrived_before, "a run that could not lock sent something"

    # A run that waits takes the lock over once it expires, settles what the dead run left, and finishes.
    started = time.time()
    run = launcher.start(events_config(sync_id, lock_wait=ttl + 10))
    assert run.wait() == 0, run.output[-3000:]
    summary = run.result
    assert summary["duration_s"] >= expires - started - 0.1, "the run did not wait for the lock to expire"
    later = [r for r in accepted(launcher.client, "events")[sent_before:]]
    assert later and min(r["received_at"] for r in later) >= expires, "a request went out before the lock expired"
    assert summary["in_doubt"] == pending
    assert summary["succeeded"]["added"] + summary["in_doubt"] + summary["unchanged"] == ROWS
    sent = accepted_event_ids(launcher.client)
    assert max(sent.values()) == 1 and launcher.client.stats()["duplicate_events"] == 0
    assert warehouse.lock(sync_id) is None


def test_a_run_that_lost_its_lock_while_stalled_sends_nothing(attentive_emulator: Emulator, tmp_path: Path) -> None:
    """Regression: a run whose lock expired during a long pre-send phase (here the primary-key check) and was
    taken over used to send its first chunk alongside the new holder; the lock is now checked before every
    batch of intents."""
    path = tmp_path / "warehouse.db"
    conn = sqlite3.connect(path)
    create_orders(conn, 50)
    other = sqlite3.connect(path)

    class SlowCheck(SqlSource):
        def check_primary_key(self, column: str, **kwargs: Any) -> None:
            super().check_primary_key(column, **kwargs)
            time.sleep(0.8)  # longer than the lock's TTL
            StateStore(other).acquire_lock("lock.stalled", "the-next-run", ttl_s=60, wait_s=0)

    obj = events(sync_id="lock.stalled", event_type="E")
    with transport(attentive_emulator.url) as sender:
        engine = sync_engine(
            obj,
            conn,
            "SELECT id, phone FROM orders",
            sender=sender,
            source_type=SlowCheck,
            sync_id="lock.stalled",
            lock_ttl_s=0.5,
        )
        with pytest.raises(SyncLockedError, match="lost the lock"):
            engine.run()
    assert request_count(attentive_emulator, "events") == 0
    assert StateStore(other)._lock_row("lock.stalled")[0] == "the-next-run", "the new holder keeps its lock"
    conn.close()
    other.close()
