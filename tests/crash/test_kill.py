"""SIGKILL real operator processes at seeded points, rerun to completion, and check what Attentive got.

Each test kills the same sync several times in a row (every rerun starts by settling what the killed one
left in flight), changes the model between some kills, then runs it to completion and compares the emulator's
records with the model and the state table. 23 kill points: 7 attributes, 7 events, 7 subscriptions mirror
(with membership changes, members leaving and coming back), 2 subscriptions without ``subscriptions:read``.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter, defaultdict
from typing import Any

import pytest

from airflow_provider_attentive.sync.values import mask_key
from tests.helpers.crash import LOCK_TTL_S, Launcher, assert_accounted, assert_no_secrets, in_doubt_bound, rng_for
from tests.helpers.objects import event_ids
from tests.helpers.phones import phone
from tests.helpers.records import accepted, accepted_event_ids, stored_event_ids, subscribed_phones
from tests.helpers.warehouse import Warehouse, set_members

pytestmark = pytest.mark.slow

BATCH = 10
MARGIN = 40  # attributes and events: 40 requests take >= 0.16 s at the emulator's 150/s plus latency
COMMON = {"batch_size": BATCH, "chunk_size": 50, "lock_wait": 30}
ENGINE = {"lock_ttl_s": LOCK_TTL_S}  # a killed run's lock expires quickly; see test_lock for the waiting itself


def config(obj: str, sync_id: str, sql: str, primary_key: str, **options: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "object": obj,
        "sync_id": sync_id,
        "sql": sql,
        "primary_key": primary_key,
        "options": {**COMMON, **options},
        "engine": ENGINE,
    }
    if obj == "subscriptions":
        cfg["mode"] = cfg["options"].pop("mode")
    return cfg


def kill_point(todo: int, margin: int, low: int = 1) -> tuple[int, int]:
    """Kill after between ``low`` and ``todo - margin`` requests, so at least ``margin`` are still to go.

    Rate limits let a burst of up to ``limit`` requests out at once, so callers keep ``todo`` above the limit
    plus the margin: then the last ``margin`` requests are paced, and the run cannot finish before the kill.
    """
    assert todo - margin >= low, f"only {todo} requests left to send; the kill could miss the run"
    return (low, todo - margin)


def kill(launcher: Launcher, cfg: dict[str, Any], rng: random.Random, **how: Any) -> int:
    """Kill one run; check the write-ahead bound; return how many rows it left pending."""
    run = launcher.kill_during(cfg, rng, **how)
    assert run.killed, f"the run was not killed mid-flight (rc={run.rc}):\n{run.output[-3000:]}"
    pending = launcher.warehouse.statuses(cfg["sync_id"])["pending"]
    assert pending <= in_doubt_bound(BATCH), f"{pending} rows left pending, above the documented bound"
    return pending


# ------------------------------------------------------------------------------------------ attributes ----


def test_attributes_killed_seven_times_end_exactly_as_the_model(
    launcher: Launcher, warehouse: Warehouse, request: pytest.FixtureRequest
) -> None:
    rng = rng_for(request)
    client = launcher.client
    rows = 240
    invalid = {i for i in range(rows) if i % 41 == 7}  # not a phone number: reported, never sent
    warehouse.execute("CREATE TABLE customers (id INTEGER, phone TEXT, tier TEXT, ltv REAL)")
    warehouse.executemany(
        "INSERT INTO customers VALUES (?, ?, ?, ?)",
        [(i, "n/a" if i in invalid else phone(i), "bronze", i * 1.5) for i in range(rows)],
    )
    cfg = config("attributes", "crash.attributes", "SELECT id, phone, tier, ltv FROM customers", "id")
    valid = [i for i in range(rows) if i not in invalid]
    changed_total = 0
    pending_total = 0
    for k in range(7):
        state = warehouse.state(cfg["sync_id"])
        done = [i for i in valid if state.get(str(i), {}).get("status") == "ok"]
        todo = len(valid) - len(done)  # pending and failed rows are resent
        wanted = max(0, 100 - todo) + (20 if k in (2, 4) else 0)  # change rows Attentive already has
        ids = rng.sample(done, min(wanted, len(done)))
        warehouse.executemany("UPDATE customers SET tier = ? WHERE id = ?", [(f"tier-{k}", i) for i in ids])
        changed_total += len(ids)
        after = kill_point(todo + len(ids), MARGIN)
        pending_total += kill(launcher, cfg, rng, endpoint="attributes", after=after)

    final = launcher.complete(cfg)
    assert_accounted(final)
    assert final["invalid"] == len(invalid)

    model = dict(
        (i, {"tier": tier, "ltv": ltv})
        for i, tier, ltv in warehouse.query("SELECT id, tier, ltv FROM customers")
        if i not in invalid
    )
    held = client.attributes()
    assert {p: held.get(p) for p in map(phone, model)} == {phone(i): v for i, v in model.items()}
    assert not {phone(i) for i in invalid} & set(held), "an invalid row reached Attentive"
    state = warehouse.state(cfg["sync_id"])
    assert set(state) == {str(i) for i in model}
    assert {r["status"] for r in state.values()} == {"ok"}
    assert all(r["row_hash"] == r["attempt_hash"] for r in state.values())
    # At-least-once, but resends are bounded: only rows a kill left in doubt went out a second time.
    sends = len(accepted(client, "attributes"))
    assert sends <= len(valid) + changed_total + pending_total

    again = launcher.complete(cfg)
    assert again["requests"] == 0 and again["unchanged"] == len(valid)


# ---------------------------------------------------------------------------------------------- events ----


def test_events_killed_seven_times_are_never_sent_twice(
    launcher: Launcher, warehouse: Warehouse, request: pytest.FixtureRequest
) -> None:
    rng = rng_for(request)
    client = launcher.client
    sync_id = "crash.events"
    now = dt.datetime.now(dt.timezone.utc)
    warehouse.execute("CREATE TABLE orders (order_id INTEGER, phone TEXT, amount REAL, ts TEXT)")

    def add_orders(ids: range) -> None:
        warehouse.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?)",
            [
                (i, "12" if i % 53 == 9 else phone(i), i * 2.25, (now - dt.timedelta(minutes=i)).isoformat())
                for i in ids
            ],
        )

    add_orders(range(200))
    cfg = config(
        "events",
        sync_id,
        "SELECT order_id, phone, amount, ts FROM orders",
        "order_id",
        event_type="Order Shipped",
        mapping={"phone": "phone", "amount": "properties.amount", "ts": "timestamp"},
    )
    next_id = 200

    def unsent() -> int:
        statuses = warehouse.statuses(sync_id)  # in_doubt and pending rows will not be sent again
        return sum(1 for i in range(next_id) if i % 53 != 9) - sum(statuses.values()) + statuses["failed"]

    for k in range(7):
        if k:
            more = max(25, 100 - unsent())  # an incremental model: new orders between runs
            add_orders(range(next_id, next_id + more))
            next_id += more
        kill(launcher, cfg, rng, endpoint="events", after=kill_point(unsent(), MARGIN))

    valid = {str(i) for i in range(next_id) if i % 53 != 9}
    event_id = event_ids(sync_id, valid)

    # Default: rows a kill left in doubt are reported, not resent; everything else is delivered.
    done = launcher.complete(cfg)
    assert_accounted(done)
    stats = client.stats()
    assert stats["duplicate_events"] == 0, "an event Attentive had accepted was sent again"
    assert max(accepted_event_ids(client).values()) == 1
    state = warehouse.state(sync_id)
    in_doubt = {k for k, r in state.items() if r["status"] == "in_doubt"}
    delivered = {k for k, r in state.items() if r["status"] == "ok"}
    assert delivered | in_doubt == valid, "a valid row was neither delivered nor reported in doubt"
    assert in_doubt, "seven kills mid-send should leave something in doubt"
    assert done["in_doubt"] == len(in_doubt)
    logged = {e["pk"] for e in warehouse.log(sync_id) if e["status"] == "in_doubt"}
    assert {mask_key(k) for k in in_doubt} <= logged
    stored = stored_event_ids(client)
    assert {event_id[e] for e in stored} <= valid
    assert {event_id[e] for e in stored} >= delivered, "state claims an event Attentive does not hold"
    landed_in_doubt = {event_id[e] for e in stored} & in_doubt

    # resend_in_doubt=True: the rest goes out with the same externalEventId; Attentive keeps one of each.
    resent = launcher.complete({**cfg, "options": {**cfg["options"], "resend_in_doubt": True}})
    assert resent["planned"]["added"] == len(in_doubt) and resent["succeeded"]["added"] == len(in_doubt)
    stats = client.stats()
    assert stats["duplicate_events"] == len(landed_in_doubt)
    stored = stored_event_ids(client)
    assert set(stored) == set(event_id) and max(stored.values()) == 1
    assert stats["events_stored"] == len(valid)
    assert {r["status"] for r in warehouse.state(sync_id).values()} == {"ok"}

    again = launcher.complete(cfg)
    assert again["requests"] == 0


# --------------------------------------------------------------------------------------- subscriptions ----


def membership_changes(history: list[set[int]]) -> tuple[Counter[str], Counter[str]]:
    """Per phone: how many times it entered the model, and how many times it left."""
    entries: Counter[str] = Counter()
    exits: Counter[str] = Counter()
    previous: set[int] = set()
    for model in history:
        entries.update(phone(i) for i in model - previous)
        exits.update(phone(i) for i in previous - model)
        previous = model
    return entries, exits


def test_subscriptions_mirror_killed_seven_times_with_members_coming_and_going(
    launcher: Launcher, warehouse: Warehouse, request: pytest.FixtureRequest
) -> None:
    rng = rng_for(request)
    client = launcher.client
    sync_id = "crash.mirror"
    # Slower than the emulator allows, so the requests after a kill point are paced (see kill_point).
    launcher.set_connection(rate_limit_subscribe=20, rate_limit_unsubscribe=10)
    model = set(range(60))
    history = [set(model)]
    set_members(warehouse, model)
    cfg = config(
        "subscriptions",
        sync_id,
        "SELECT phone FROM members",
        "phone",
        mode="mirror",
        sign_up_source_id="64140",
        max_removals=1.0,
    )
    settled = ("ok", "failed", "rejected")  # rows whose next request is certain (in-doubt ones get resolved)

    def work() -> tuple[set[str], set[str]]:
        """Subscribes and unsubscribes the next run will certainly send."""
        state = warehouse.state(sync_id)
        wanted = {phone(i) for i in model}
        adds = {
            p
            for p in wanted
            if p not in state or (state[p]["status"] in settled and state[p]["member"] != "subscribed")
        }
        removals = {
            p for p, r in state.items() if p not in wanted and r["member"] == "subscribed" and r["status"] in settled
        }
        return adds, removals

    left: set[int] = set()
    newcomer = 1000
    landed = 0
    for k in range(7):
        endpoint = {3: "unsubscribe", 5: "unsubscribe", 6: None}.get(k, "subscribe")
        if k:
            state = warehouse.state(sync_id)
            members = sorted(i for i in model if state.get(phone(i), {}).get("member") == "subscribed")
            leaving = set(rng.sample(members, min(len(members), 30 if endpoint == "unsubscribe" else 4)))
            back = set(rng.sample(sorted(left), min(3, len(left))))  # people who left come back
            model = (model - leaving) | back
            adds, _ = work()
            joining = max(3, 36 - len(adds)) if endpoint == "subscribe" else 3
            model |= set(range(newcomer, newcomer + joining))
            newcomer += joining
            left = (left | leaving) - back
            history.append(set(model))
            set_members(warehouse, model)
        adds, removals = work()
        if endpoint == "subscribe":
            how: dict[str, Any] = {"endpoint": endpoint, "after": kill_point(len(adds), 12)}
        elif endpoint == "unsubscribe":
            how = {"endpoint": endpoint, "after": kill_point(len(removals), 12)}
        else:
            how = {"endpoint": None, "delay": (0.02, 0.25)}  # anywhere: start-up, resolution, sending
        run = launcher.kill_during(cfg, rng, **how)
        if endpoint is not None:
            assert run.killed, f"the run was not killed mid-flight (rc={run.rc}):\n{run.output[-3000:]}"
        landed += run.killed
        assert warehouse.statuses(sync_id)["pending"] <= in_doubt_bound(BATCH)
    assert landed >= 6

    launcher.complete(cfg)
    expected = {phone(i) for i in model}
    stats = client.stats()
    assert stats["repeat_subscribes"] == 0, "someone already subscribed was subscribed again"
    assert stats["repeat_unsubscribes"] == 0, "someone already unsubscribed was unsubscribed again"
    assert subscribed_phones(client) == expected

    # Each subscribe and unsubscribe Attentive applied matches one membership change of the model.
    entries, exits = membership_changes(history)
    for p, subs in client.subscriptions().items():
        sub = subs["MARKETING"]
        assert sub["subscribe_requests"] <= entries[p], f"{mask_key(p)} subscribed more often than it entered"
        assert sub["unsubscribe_requests"] <= exits[p], f"{mask_key(p)} unsubscribed more often than it left"
    timeline: dict[str, list[str]] = defaultdict(list)
    changes = accepted(client, "subscribe") + accepted(client, "unsubscribe")
    for r in sorted(changes, key=lambda r: r["received_at"]):
        timeline[r["body"]["user"]["phone"]].append(r["endpoint"])
    for p, steps in timeline.items():
        assert steps == ["subscribe", "unsubscribe"] * (len(steps) // 2) + ["subscribe"] * (len(steps) % 2), (
            f"{mask_key(p)}: {steps}"
        )

    state = warehouse.state(sync_id)
    assert {p for p, r in state.items() if r["member"] == "subscribed"} == expected
    assert not {r["status"] for r in state.values()} & {"pending", "in_doubt"}
    for run in launcher.runs:
        assert_no_secrets(run.output, sorted(expected | set(timeline)))

    again = launcher.complete(cfg)
    assert again["requests"] == 0


def test_subscriptions_without_read_scope_report_in_doubt_and_resend_only_when_asked(
    launcher: Launcher, warehouse: Warehouse, request: pytest.FixtureRequest
) -> None:
    rng = rng_for(request)
    client = launcher.client
    sync_id = "crash.noread"
    everyone = set(range(150))
    launcher.set_connection(rate_limit_subscribe=20)
    set_members(warehouse, everyone)
    cfg = config(
        "subscriptions",
        sync_id,
        "SELECT phone FROM members",
        "phone",
        mode="add",
        sign_up_source_id="64140",
        attentive_conn_id="attentive_noread",
    )
    kill(launcher, cfg, rng, endpoint="subscribe", after=(5, 50))
    untouched = len(everyone) - len(warehouse.state(sync_id))  # in-doubt rows will not be sent again
    kill(launcher, cfg, rng, endpoint="subscribe", after=kill_point(untouched, 20 + 12, low=5))

    done = launcher.complete(cfg)
    state = warehouse.state(sync_id)
    in_doubt = {p for p, r in state.items() if r["status"] == "in_doubt"}
    assert in_doubt and done["in_doubt"] == len(in_doubt)
    assert {p for p, r in state.items() if r["status"] == "ok"} == {phone(i) for i in everyone} - in_doubt
    assert client.stats()["repeat_subscribes"] == 0
    per_phone = Counter(r["body"]["user"]["phone"] for r in accepted(client, "subscribe"))
    assert max(per_phone.values()) == 1, "an in-doubt subscribe was sent again without resend_in_doubt"
    log = warehouse.log(sync_id)
    assert {mask_key(p) for p in in_doubt} <= {e["pk"] for e in log if e["status"] == "in_doubt"}
    assert not {e["pk"] for e in log} & {phone(i) for i in everyone}, "the log table holds a phone in clear"
    landed = in_doubt & subscribed_phones(client)

    resent = launcher.complete({**cfg, "options": {**cfg["options"], "resend_in_doubt": True}})
    assert resent["planned"]["added"] == len(in_doubt)
    assert subscribed_phones(client) == {phone(i) for i in everyone}
    # The explicit opt-in resends those that had landed, and only those are repeats.
    assert client.stats()["repeat_subscribes"] == len(landed)
    for run in launcher.runs:
        assert_no_secrets(run.output, [phone(i) for i in everyone])
