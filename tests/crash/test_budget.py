"""max_rows_per_run and max_runtime: a run stops sending cleanly, reports ``remaining``, the next one continues."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.helpers.crash import Launcher, assert_accounted
from tests.helpers.phones import phone
from tests.helpers.records import accepted, stored_event_ids, subscribed_phones
from tests.helpers.warehouse import Warehouse, create_orders, set_members

pytestmark = pytest.mark.slow


def test_max_rows_per_run_sends_slices_and_the_next_run_continues(launcher: Launcher, warehouse: Warehouse) -> None:
    client = launcher.client
    rows, cap = 95, 25  # the cap is not a multiple of the batch size; the model is a single chunk
    create_orders(warehouse, rows)
    cfg = {
        "object": "events",
        "sync_id": "budget.rows",
        "sql": "SELECT id, phone FROM orders",
        "primary_key": "id",
        "options": {"event_type": "Order Shipped", "batch_size": 10, "max_rows_per_run": cap},
    }
    left = rows
    runs = 0
    while left:
        summary = launcher.complete(cfg)
        runs += 1
        assert_accounted(summary)
        sent = min(cap, left)
        assert summary["succeeded"]["added"] == sent and summary["remaining"] == left - sent, summary
        left -= sent
        assert client.stats()["events_stored"] == rows - left
        assert warehouse.statuses("budget.rows") == Counter(ok=rows - left), "rows not sent left no trace"
    assert runs == 4
    stored = stored_event_ids(client)
    assert len(stored) == rows and max(stored.values()) == 1 and client.stats()["duplicate_events"] == 0
    assert launcher.complete(cfg)["requests"] == 0


def test_max_runtime_stops_cleanly_and_the_next_run_continues(launcher: Launcher, warehouse: Warehouse) -> None:
    client = launcher.client
    rows, budget = 400, 1.0
    warehouse.execute("CREATE TABLE customers (id INTEGER, phone TEXT, tier TEXT)")
    warehouse.executemany("INSERT INTO customers VALUES (?, ?, 'gold')", [(i, phone(i)) for i in range(rows)])
    # 100 requests/s and 4 lanes: the whole model takes ~4 s, and at most 8 requests are pulled ahead.
    launcher.set_connection(rate_limit_attributes=100, max_concurrency=4)
    cfg = {
        "object": "attributes",
        "sync_id": "budget.runtime",
        "sql": "SELECT id, phone, tier FROM customers",
        "primary_key": "id",
        "options": {"batch_size": 10, "max_runtime": budget},
    }
    summaries: list[dict[str, Any]] = []
    while not summaries or summaries[-1]["remaining"]:
        summary = launcher.complete(cfg)
        summaries.append(summary)
        assert_accounted(summary)
        assert summary["failed"] == {"added": 0, "changed": 0, "removed": 0}
        # The whole model takes about 4 s; a run that stops well before that stopped on its budget (the
        # slack is for a loaded machine, where reading and settling take longer).
        assert summary["duration_s"] < budget + 2.5, "the run went on long after its budget"
        assert len(summaries) < 10
    assert len(summaries) >= 3
    assert all(s["remaining"] > 0 for s in summaries[:-1])
    assert sum(s["succeeded"]["added"] for s in summaries) == rows
    per_phone = Counter(r["body"]["user"]["phone"] for r in accepted(client, "attributes"))
    assert set(per_phone) == {phone(i) for i in range(rows)} and max(per_phone.values()) == 1
    assert warehouse.statuses("budget.runtime") == Counter(ok=rows)


def test_a_mirror_on_a_budget_counts_removals_as_remaining_and_finishes_later(
    launcher: Launcher, warehouse: Warehouse
) -> None:
    client = launcher.client
    cfg = {
        "object": "subscriptions",
        "mode": "mirror",
        "sync_id": "budget.mirror",
        "sql": "SELECT phone FROM members",
        "primary_key": "phone",
        "options": {"sign_up_source_id": "64140", "batch_size": 10, "max_rows_per_run": 15, "max_removals": 0.5},
    }
    for model in (set(range(40)), set(range(12, 52))):  # then 12 leave and 12 join: 24 changes
        set_members(warehouse, model)
        while True:
            summary = launcher.complete(cfg)
            done = sum(summary["succeeded"].values()) + sum(summary["failed"].values())
            assert done <= 15
            if not summary["remaining"]:
                break
        assert subscribed_phones(client) == {phone(i) for i in model}
    stats = client.stats()
    assert stats["repeat_subscribes"] == 0 and stats["repeat_unsubscribes"] == 0
    assert len(accepted(client, "unsubscribe")) == 12 and len(accepted(client, "subscribe")) == 52
