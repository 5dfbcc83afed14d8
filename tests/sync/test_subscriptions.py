"""Subscriptions Add / Remove / Mirror: only real membership changes are sent, each exactly once."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.errors import SyncAborted, SyncConfigError, SyncConfigStop
from tests.helpers.engine import RunSync, ops, transport
from tests.helpers.objects import subs
from tests.helpers.phones import phone
from tests.helpers.records import bodies, request_count, subscribed_phones
from tests.helpers.warehouse import set_members

SQL = "SELECT phone, email FROM members"


def test_mirror_sends_each_membership_change_exactly_once(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    emu = attentive_emulator.client
    set_members(warehouse, list(range(40)))
    first = run_sync(subs(), warehouse, SQL, mode="mirror")
    assert ops(first, "succeeded") == (40, 0, 0) and first["already_subscribed"] == 0
    assert request_count(attentive_emulator, "subscribe") == 40

    set_members(warehouse, list(range(5, 43)))  # 5 leave (0-4), 3 enter (40-42)
    second = run_sync(subs(), warehouse, SQL, mode="mirror")
    assert ops(second, "planned") == (3, 0, 5) and ops(second, "succeeded") == (3, 0, 5)
    assert second["unchanged"] == 35
    subscribes = bodies(attentive_emulator, "subscribe")
    unsubscribes = bodies(attentive_emulator, "unsubscribe")
    assert sorted(b["user"]["phone"] for b in subscribes[40:]) == [phone(40), phone(41), phone(42)]
    assert sorted(b["user"]["phone"] for b in unsubscribes) == [phone(i) for i in range(5)]
    assert unsubscribes[0] == {
        "user": {"phone": unsubscribes[0]["user"]["phone"]},
        "subscriptions": [{"type": "MARKETING", "channel": "TEXT"}],
        "notification": {"disabled": True},
    }
    assert subscribes[0] == {
        "user": {"phone": subscribes[0]["user"]["phone"]},
        "signUpSourceId": "64140",
        "singleOptIn": False,
    }

    third = run_sync(subs(), warehouse, SQL, mode="mirror")
    assert third["requests"] == 0 and third["unchanged"] == 38
    stats = emu.stats()
    assert stats["repeat_subscribes"] == 0 and stats["repeat_unsubscribes"] == 0
    assert stats["endpoints"]["subscribe"]["max_window_all"] <= 10
    assert stats["endpoints"]["unsubscribe"]["max_window_all"] <= 5
    # Nobody was texted an "unsubscribed" confirmation: notification.disabled was honoured.
    assert not [m for m in emu.messages() if "unsub" in str(m).lower()]


def test_a_member_who_returns_is_subscribed_again_once(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    set_members(warehouse, [1, 2])
    run_sync(subs(), warehouse, SQL, mode="mirror")
    set_members(warehouse, [2])
    run_sync(subs(), warehouse, SQL, mode="mirror", max_removals=1)
    set_members(warehouse, [1, 2])
    back = run_sync(subs(), warehouse, SQL, mode="mirror")
    assert ops(back, "succeeded") == (1, 0, 0)
    assert attentive_emulator.client.stats()["repeat_subscribes"] == 0


def test_empty_model_unsubscribes_nobody(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    set_members(warehouse, list(range(6)))
    run_sync(subs(), warehouse, SQL, mode="mirror")
    set_members(warehouse, [])
    with pytest.raises(SyncAborted, match="no rows"):
        run_sync(subs(), warehouse, SQL, mode="mirror", max_removals=1.0)
    assert request_count(attentive_emulator, "unsubscribe") == 0
    allowed = run_sync(subs(), warehouse, SQL, mode="mirror", max_removals=1.0, allow_empty_source=True)
    assert ops(allowed, "succeeded") == (0, 0, 6)


def test_removals_above_the_cap_send_nothing_at_all(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    set_members(warehouse, list(range(10)))
    run_sync(subs(), warehouse, SQL, mode="mirror")
    set_members(warehouse, [7, 8, 9, 100, 101])  # 7 leave (70% > 20%), 2 enter
    with pytest.raises(SyncAborted) as info:
        run_sync(subs(), warehouse, SQL, mode="mirror")
    assert "7 of 10" in str(info.value) and "dry_run=True" in str(info.value) and "max_removals" in str(info.value)
    assert request_count(attentive_emulator, "subscribe") == 10, "not even the 2 newcomers are sent"
    assert request_count(attentive_emulator, "unsubscribe") == 0
    with pytest.raises(SyncAborted):
        run_sync(subs(), warehouse, SQL, mode="mirror", max_removals=6)
    done = run_sync(subs(), warehouse, SQL, mode="mirror", max_removals=7)
    assert ops(done, "succeeded") == (2, 0, 7)


def test_dry_run_lists_exactly_who_would_be_added_and_removed(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    set_members(warehouse, [1, 2, 3])
    run_sync(subs(), warehouse, SQL, mode="mirror")
    set_members(warehouse, [2, 3, 4])
    preview = run_sync(subs(), warehouse, SQL, mode="mirror", dry_run=True, max_removals=1)
    assert ops(preview, "planned") == (1, 0, 1) and preview["requests"] == 0
    assert preview["would_send"] == {"added": ["+1******0004"], "removed": ["+1******0001"]}
    live = run_sync(subs(), warehouse, SQL, mode="mirror", max_removals=1)
    assert ops(live, "succeeded") == ops(preview, "planned")


def test_add_and_remove_modes(attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync) -> None:
    set_members(warehouse, [1, 2, 3])
    added = run_sync(subs(), warehouse, SQL, mode="add", sync_id="adder")
    assert ops(added, "succeeded") == (3, 0, 0)
    set_members(warehouse, [3])
    again = run_sync(subs(), warehouse, SQL, mode="add", sync_id="adder")
    assert again["requests"] == 0, "add mode never unsubscribes people who left"

    set_members(warehouse, [1, 2], emails=True)
    removed = run_sync(subs(), warehouse, SQL, mode="remove", sync_id="remover")
    assert ops(removed, "succeeded") == (0, 0, 2)
    body = bodies(attentive_emulator, "unsubscribe")[0]
    assert body["subscriptions"] == [
        {"type": "MARKETING", "channel": "TEXT"},
        {"type": "MARKETING", "channel": "EMAIL"},
    ]
    again = run_sync(subs(), warehouse, SQL, mode="remove", sync_id="remover")
    assert again["requests"] == 0
    assert attentive_emulator.client.stats()["repeat_unsubscribes"] == 0


def test_previously_created_is_success_reported_as_already_subscribed(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    httpx.post(
        f"{attentive_emulator.url}/v1/subscriptions",
        json={"user": {"phone": phone(1)}, "signUpSourceId": "64140"},
        headers={"Authorization": "Bearer test-key"},
    ).raise_for_status()
    set_members(warehouse, [1, 2])
    summary = run_sync(subs(), warehouse, SQL, mode="add")
    assert ops(summary, "succeeded") == (2, 0, 0) and summary["already_subscribed"] == 1


def test_opted_out_subscriber_is_reported_once_not_retried_every_run(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    attentive_emulator.client.seed_opted_out([phone(2)])
    set_members(warehouse, [1, 2, 3])
    first = run_sync(subs(), warehouse, SQL, mode="mirror", max_failed_ratio=0.5)
    assert ops(first, "succeeded") == (2, 0, 0) and first["rejected"] == 1
    assert first["errors"][0]["key"] == "+1******0002" and "opted out" in first["errors"][0]["reason"]
    second = run_sync(subs(), warehouse, SQL, mode="mirror")
    assert second["requests"] == 0 and second["skipped_rejected"] == 1


def test_names_become_attributes_after_a_successful_subscribe(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    set_members(warehouse, [1])
    warehouse.execute("UPDATE members SET first_name = 'Ada'")
    warehouse.commit()
    run_sync(subs(), warehouse, "SELECT phone, first_name FROM members", mode="add")
    assert attentive_emulator.client.attributes()[phone(1)] == {"firstName": "Ada"}


def test_subscribe_in_doubt_is_resolved_with_the_eligibility_endpoint(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    attentive_emulator.client.set_faults(drop_after_apply_rate=1.0, endpoints=["subscribe"], seed=1)
    set_members(warehouse, [1, 2])
    first = run_sync(subs(), warehouse, SQL, mode="add", max_failed_ratio=1)
    assert first["in_doubt"] == 2 and request_count(attentive_emulator, "subscribe") == 2
    attentive_emulator.client.clear_faults()
    # Two checks before subscribing (nobody was subscribed yet), then the end-of-run check of the two in
    # doubt: both had landed, so nothing is resent.
    assert request_count(attentive_emulator, "subscriptions_read") == 2 + 2
    second = run_sync(subs(), warehouse, SQL, mode="add")
    assert second["requests"] == 0 and second["unchanged"] == 2
    assert attentive_emulator.client.stats()["repeat_subscribes"] == 0


def test_phone_is_required_and_config_is_checked(warehouse: sqlite3.Connection, run_sync: RunSync) -> None:
    with pytest.raises(SyncConfigError, match="exactly one"):
        subs(locale="en-US")
    with pytest.raises(SyncConfigError, match="en-US"):
        subs(sign_up_source_id=None, locale="english")
    set_members(warehouse, [1])
    with pytest.raises(SyncConfigError, match="phone column"):
        run_sync(subs(primary_key="email"), warehouse, "SELECT email FROM members", mode="add")


# -- one subscriber per phone, whatever the primary key ----------------------------------------------------


def customers(conn: sqlite3.Connection, rows: list[tuple[int, str]]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS c (customer_id INTEGER, phone TEXT)")
    conn.execute("DELETE FROM c")
    conn.executemany("INSERT INTO c VALUES (?, ?)", rows)
    conn.commit()


def test_a_reformatted_phone_is_the_same_subscriber(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    set_members(warehouse, [])
    warehouse.executemany("INSERT INTO members VALUES (?, NULL, NULL)", [("(415) 555-0111",), ("+14155550112",)])
    warehouse.commit()
    first = run_sync(subs(default_region="US"), warehouse, SQL, mode="mirror")
    assert ops(first, "succeeded") == (2, 0, 0)
    warehouse.execute("UPDATE members SET phone = '+1 415 555 0111' WHERE phone = '(415) 555-0111'")
    warehouse.commit()
    again = run_sync(subs(default_region="US"), warehouse, SQL, mode="mirror")
    assert ops(again, "planned") == (0, 0, 0) and again["unchanged"] == 2
    assert subscribed_phones(attentive_emulator) == {"+14155550111", "+14155550112"}
    stats = attentive_emulator.client.stats()
    assert stats["repeat_subscribes"] == 0 and stats["endpoints"]["unsubscribe"]["requests"] == 0


def test_customers_sharing_a_phone_subscribe_it_once_and_it_stays_while_one_remains(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    sql = "SELECT customer_id, phone FROM c"
    shared = phone(31)
    customers(warehouse, [(1, shared), (2, shared), (3, phone(32))])
    obj = dict(primary_key="customer_id")
    first = run_sync(subs(**obj), warehouse, sql, mode="mirror")
    assert ops(first, "succeeded") == (2, 0, 0) and first["shared_phones"] == 1 and first["invalid"] == 0
    assert request_count(attentive_emulator, "subscribe") == 2
    customers(warehouse, [(2, shared), (3, phone(32))])  # customer 1 leaves; customer 2 still has the phone
    again = run_sync(subs(**obj), warehouse, sql, mode="mirror")
    assert ops(again, "planned") == (0, 0, 0)
    assert subscribed_phones(attentive_emulator) == {shared, phone(32)}
    assert attentive_emulator.client.stats()["repeat_subscribes"] == 0


def test_a_customer_whose_phone_changed_moves_to_the_new_number(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    sql = "SELECT customer_id, phone FROM c"
    customers(warehouse, [(i, phone(40 + i)) for i in range(10)])
    run_sync(subs(primary_key="customer_id"), warehouse, sql, mode="mirror")
    customers(warehouse, [(i, phone(40 + i) if i != 5 else phone(99)) for i in range(10)])
    moved = run_sync(subs(primary_key="customer_id"), warehouse, sql, mode="mirror")
    assert ops(moved, "succeeded") == (1, 0, 1)
    assert [b["user"]["phone"] for b in bodies(attentive_emulator, "subscribe")][-1] == phone(99)
    assert [b["user"]["phone"] for b in bodies(attentive_emulator, "unsubscribe")] == [phone(45)]
    assert subscribed_phones(attentive_emulator) == {phone(40 + i) for i in range(10) if i != 5} | {phone(99)}


def test_a_row_without_a_usable_phone_is_reported_under_its_primary_key(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    customers(warehouse, [(1, phone(1)), (2, "not a phone"), (3, None)])  # type: ignore[list-item]
    summary = run_sync(subs(primary_key="customer_id"), warehouse, "SELECT customer_id, phone FROM c", mode="add",
                       max_failed_ratio=1.0)  # fmt: skip
    assert summary["succeeded"]["added"] == 1 and summary["invalid"] == 2
    reasons = {e["key"]: e["reason"] for e in summary["errors"]}
    assert reasons["3"] == "phone is missing" and "phone" in reasons["2"]


def test_a_mirror_never_unsubscribes_someone_who_was_subscribed_before_it(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    set_members(warehouse, [1, 2, 3])
    run_sync(subs(), warehouse, SQL, mode="add", sync_id="welcome")  # another sync subscribed them first
    set_members(warehouse, [1, 2, 3, 4])
    vip = run_sync(subs(), warehouse, SQL, mode="mirror", sync_id="vip")
    assert ops(vip, "succeeded") == (4, 0, 0) and vip["already_subscribed"] == 3
    set_members(warehouse, [4])
    left = run_sync(subs(), warehouse, SQL, mode="mirror", sync_id="vip", max_removals=1.0)
    assert ops(left, "planned") == (0, 0, 0), "vip added none of 1-3, so it removes none of them"
    assert subscribed_phones(attentive_emulator) == {phone(1), phone(2), phone(3), phone(4)}
    set_members(warehouse, [1, 4])
    back = run_sync(subs(), warehouse, SQL, mode="mirror", sync_id="vip", max_removals=1.0)
    assert ops(back, "planned") == (0, 0, 0) and back["unchanged"] == 2, "and does not subscribe them again"


def test_a_phone_shared_across_chunks_is_decided_once_even_when_its_first_row_was_rejected(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    attentive_emulator.client.seed_opted_out([phone(5)])
    customers(warehouse, [(1, phone(5)), (2, phone(6)), (3, phone(7)), (4, phone(5))])
    sql = "SELECT customer_id, phone FROM c ORDER BY customer_id"
    runs = []
    for dry_run in (True, False, False, False):
        runs.append(run_sync(subs(primary_key="customer_id"), warehouse, sql, mode="add", chunk=1,
                             dry_run=dry_run, max_failed_ratio=1.0))  # fmt: skip
    dry, first, second, third = runs
    assert dry["planned"] == first["planned"] == {"added": 3, "changed": 0, "removed": 0}
    assert dry["shared_phones"] == first["shared_phones"] == 1
    assert first["rejected"] == 1 and ops(first, "succeeded") == (2, 0, 0)
    assert second["requests"] == third["requests"] == 0, "the opted-out phone is not tried again"
    assert request_count(attentive_emulator, "subscribe") == 3


def test_a_member_whose_phone_is_unreadable_this_run_is_not_unsubscribed(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    sql = "SELECT customer_id, phone FROM c"
    customers(warehouse, [(i, phone(60 + i)) for i in range(10)])
    run_sync(subs(primary_key="customer_id"), warehouse, sql, mode="mirror")
    customers(warehouse, [(i, phone(60 + i) if i else "(415) 555-10") for i in range(10)])  # a typo for customer 0
    typo = run_sync(subs(primary_key="customer_id"), warehouse, sql, mode="mirror", max_failed_ratio=1.0)
    assert typo["invalid"] == 1 and typo["held_removals"] == 1 and ops(typo, "succeeded") == (0, 0, 0)
    assert phone(60) in subscribed_phones(attentive_emulator)
    customers(warehouse, [(i, phone(60 + i)) for i in range(10)])
    fixed = run_sync(subs(primary_key="customer_id"), warehouse, sql, mode="mirror")
    assert ops(fixed, "planned") == (0, 0, 0), "the fixed row is the same subscriber: nothing is sent"
    assert attentive_emulator.client.stats()["repeat_subscribes"] == 0


def test_an_unreadable_phone_as_primary_key_is_masked_in_the_report(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    set_members(warehouse, [1])
    warehouse.execute("INSERT INTO members VALUES ('+1 415 555 0125 #', NULL, NULL)")
    warehouse.commit()
    summary = run_sync(subs(), warehouse, SQL, mode="add", max_failed_ratio=1.0)
    assert summary["invalid"] == 1
    assert "415 555" not in str(summary) and summary["errors"][0]["key"] == "+* *** *** **25 #"


def test_a_leaving_member_keeps_the_email_subscription_another_row_still_has(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    warehouse.execute("CREATE TABLE f (customer_id INTEGER, phone TEXT, email TEXT)")
    rows = [(1, phone(81), "fam@example.com"), (2, phone(82), "fam@example.com"), (3, phone(83), "c@example.com")]
    warehouse.executemany("INSERT INTO f VALUES (?, ?, ?)", rows)
    warehouse.commit()
    sql = "SELECT customer_id, phone, email FROM f"
    run_sync(subs(primary_key="customer_id"), warehouse, sql, mode="mirror")
    warehouse.execute("DELETE FROM f WHERE customer_id IN (1, 3)")
    warehouse.commit()
    run_sync(subs(primary_key="customer_id"), warehouse, sql, mode="mirror", max_removals=1.0)
    unsubscribes = {b["user"]["phone"]: b["subscriptions"] for b in bodies(attentive_emulator, "unsubscribe")}
    assert unsubscribes[phone(81)] == [{"type": "MARKETING", "channel": "TEXT"}], "fam@ is still in the model"
    assert {"type": "MARKETING", "channel": "EMAIL"} in unsubscribes[phone(83)]


def test_a_sign_up_unit_of_another_type_stops_the_run_naming_the_fix(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    attentive_emulator.client.set_sign_up({"64140": "TRANSACTIONAL"})
    set_members(warehouse, list(range(30)))
    with pytest.raises(SyncConfigStop, match="subscription_type") as info:
        run_sync(subs(), warehouse, SQL, mode="mirror", batch_size=5)
    accepted = info.value.summary["succeeded"]["added"]
    assert (
        0 < accepted < 30 and info.value.summary["remaining"] == 30 - accepted - info.value.summary["failed"]["added"]
    )
    fixed = run_sync(subs(subscription_type="TRANSACTIONAL"), warehouse, SQL, mode="mirror")
    assert ops(fixed, "succeeded") == (30 - accepted, 0, 0) and fixed["unchanged"] == accepted
    assert attentive_emulator.client.stats()["repeat_subscribes"] == 0


def test_names_not_written_in_one_run_are_written_by_the_next_without_subscribing_again(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    set_members(warehouse, [1, 2, 3])
    warehouse.execute("UPDATE members SET first_name = 'Ada'")
    warehouse.commit()
    sql = "SELECT phone, first_name FROM members"
    attentive_emulator.client.set_faults(error_rate=1.0, endpoints=["attributes"], seed=1)
    first = run_sync(subs(), warehouse, sql, mode="add")
    assert ops(first, "succeeded") == (3, 0, 0) and first["names_written"] == 0
    assert attentive_emulator.client.attributes() == {}
    attentive_emulator.client.clear_faults()
    second = run_sync(subs(), warehouse, sql, mode="add")
    assert ops(second, "planned") == (0, 0, 0) and second["names_written"] == 3
    assert attentive_emulator.client.attributes() == {phone(i): {"firstName": "Ada"} for i in (1, 2, 3)}
    third = run_sync(subs(), warehouse, sql, mode="add")
    assert third["requests"] == 0, "complete rows send nothing"
    warehouse.execute("UPDATE members SET first_name = 'Grace' WHERE phone = ?", (phone(2),))
    warehouse.commit()
    renamed = run_sync(subs(), warehouse, sql, mode="add")
    assert renamed["names_written"] == 1 and ops(renamed, "planned") == (0, 0, 0)
    assert attentive_emulator.client.attributes()[phone(2)] == {"firstName": "Grace"}
    assert (
        request_count(attentive_emulator, "subscribe") == 3
        and attentive_emulator.client.stats()["repeat_subscribes"] == 0
    )


def test_someone_already_subscribed_is_not_subscribed_again_when_the_key_can_read(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    set_members(warehouse, [1, 2])
    run_sync(subs(), warehouse, SQL, mode="add", sync_id="signup_form")  # subscribed elsewhere first
    set_members(warehouse, [1, 2, 3])
    vip = run_sync(subs(), warehouse, SQL, mode="mirror", sync_id="vip")
    assert ops(vip, "succeeded") == (3, 0, 0) and vip["already_subscribed"] == 2
    assert request_count(attentive_emulator, "subscribe") == 3, "only phone 3 got a subscribe from vip"
    assert attentive_emulator.client.stats()["repeat_subscribes"] == 0
    set_members(warehouse, [3])
    left = run_sync(subs(), warehouse, SQL, mode="mirror", sync_id="vip", max_removals=1.0)
    assert ops(left, "planned") == (0, 0, 0), "vip did not add 1 and 2, so it does not remove them"


def test_without_the_read_scope_subscribes_go_out_unchecked(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    attentive_emulator.client.add_key("write-only", scopes=["subscriptions:write", "attributes:write"])
    set_members(warehouse, [1, 2, 3])
    with transport(attentive_emulator.url, api_key="write-only") as limited:
        summary = run_sync(subs(), warehouse, SQL, mode="add", sender=limited)
    assert ops(summary, "succeeded") == (3, 0, 0)
    assert request_count(attentive_emulator, "subscriptions_read") == 3, "one refused batch of checks, then none"
