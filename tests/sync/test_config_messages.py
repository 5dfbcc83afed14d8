"""Messages name the real problem: the model's columns and how they are matched, every setting a guard wants."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.errors import SyncAborted, SyncConfigError
from airflow_provider_attentive.sync.objects import AttributesType, EventsType, ObjectType, SubscriptionsType
from tests.helpers import objects
from tests.helpers.engine import RunSync
from tests.helpers.phones import phone
from tests.helpers.records import request_count
from tests.helpers.warehouse import set_members

SQL = 'SELECT "Customer ID", "Phone Number", "Loyalty Tier" FROM crm'
COLUMNS = "['Customer ID', 'Phone Number', 'Loyalty Tier']"
MakeType = Callable[[dict[str, str] | None], ObjectType]


@pytest.fixture
def crm(warehouse: sqlite3.Connection) -> sqlite3.Connection:
    warehouse.execute('CREATE TABLE crm ("Customer ID" INTEGER, "Phone Number" TEXT, "Loyalty Tier" TEXT)')
    warehouse.execute("INSERT INTO crm VALUES (1, ?, 'gold')", (phone(1),))
    warehouse.commit()
    return warehouse


def attributes(mapping: dict[str, str] | None) -> AttributesType:
    return objects.attributes(primary_key="Customer ID", mapping=mapping)


def events(mapping: dict[str, str] | None) -> EventsType:
    return objects.events(event_type="Tier Changed", primary_key="Customer ID", mapping=mapping)


def subscriptions(mapping: dict[str, str] | None) -> SubscriptionsType:
    return objects.subs(primary_key="Customer ID", mapping=mapping)


def config_error(run_sync: RunSync, obj: ObjectType, conn: sqlite3.Connection, sql: str = SQL) -> str:
    with pytest.raises(SyncConfigError) as info:
        run_sync(obj, conn, sql)
    return str(info.value)


@pytest.mark.parametrize("make", [attributes, events], ids=["attributes", "events"])
def test_no_identifier_with_default_mapping_lists_the_columns_and_the_naming_rule(
    crm: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator, make: MakeType
) -> None:
    message = config_error(run_sync, make(None), crm)
    assert f"the model's columns are {COLUMNS}" in message
    assert "with mapping=None columns are matched by name" in message
    assert "phone, email or client_user_id" in message
    assert "mapping={'Phone Number': 'phone', ...}" in message


def test_the_suggested_identifier_is_an_email_column_when_there_is_no_phone(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    warehouse.execute('CREATE TABLE crm ("Customer ID" INTEGER, "E-Mail Address" TEXT, "Tier" TEXT)')
    warehouse.commit()
    message = config_error(run_sync, attributes(None), warehouse, "SELECT * FROM crm")
    assert "['Customer ID', 'E-Mail Address', 'Tier']" in message
    assert "mapping={'E-Mail Address': 'email', ...}" in message


@pytest.mark.parametrize(
    ("make", "tier"), [(attributes, "tier"), (events, "properties.tier")], ids=["attributes", "events"]
)
def test_no_identifier_in_an_explicit_mapping_lists_the_columns(
    crm: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator, make: MakeType, tier: str
) -> None:
    message = config_error(run_sync, make({"Loyalty Tier": tier}), crm)
    assert "the mapping sends none to phone, email or client_user_id" in message
    assert COLUMNS in message
    assert "mapping=None" not in message


def test_subscriptions_without_a_phone_column_list_the_columns(
    crm: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    message = config_error(run_sync, subscriptions(None), crm)
    assert message.startswith("subscriptions need a phone column: ")
    assert f"the model's columns are {COLUMNS}" in message
    assert "with mapping=None columns are matched by name" in message
    assert message.endswith("mapping={'Phone Number': 'phone'}")
    message = config_error(run_sync, subscriptions({"Loyalty Tier": "first_name"}), crm)
    assert "the mapping sends none to 'phone'" in message and COLUMNS in message


def test_the_suggested_mapping_works(crm: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator) -> None:
    message = config_error(run_sync, subscriptions(None), crm)
    suggested = re.search(r"mapping=(\{.*\})$", message)
    assert suggested is not None
    mapping = {"Phone Number": "phone"}
    assert suggested.group(1) == repr(mapping)
    summary = run_sync(subscriptions(mapping), crm, SQL, mode="add")
    assert summary["succeeded"]["added"] == 1


def test_a_wide_model_is_listed_in_part(
    warehouse: sqlite3.Connection, run_sync: RunSync, attentive_emulator: Emulator
) -> None:
    names = ["id", *(f"c{i}" for i in range(60))]
    warehouse.execute(f"CREATE TABLE wide ({', '.join(f'{n} TEXT' for n in names)})")
    warehouse.commit()
    message = config_error(run_sync, objects.attributes(primary_key="id"), warehouse, "SELECT * FROM wide")
    assert "'c38', ... (21 more)]" in message and "'c39'" not in message


MEMBERS = "SELECT phone, email FROM members"


def mirror_of_six_now_empty(run_sync: RunSync, warehouse: sqlite3.Connection) -> Callable[..., dict[str, Any]]:
    """A mirror that subscribed six members and whose model is now empty; returns ``run(**options)`` for it."""
    set_members(warehouse, range(6))
    run_sync(objects.subs(), warehouse, MEMBERS, mode="mirror")
    set_members(warehouse, [])
    return lambda **options: run_sync(objects.subs(), warehouse, MEMBERS, mode="mirror", **options)


def test_emptying_an_audience_is_one_message_naming_both_settings(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    run = mirror_of_six_now_empty(run_sync, warehouse)
    with pytest.raises(SyncAborted, match="no rows") as info:
        run()
    message = str(info.value)
    assert "set allow_empty_source=True and max_removals=1.0 (or 6) together" in message
    assert "max_removals=0.2 (limit 1)" in message
    # Following the message is enough: one more run, not two.
    emptied = run(allow_empty_source=True, max_removals=1.0)
    assert emptied["succeeded"]["removed"] == 6
    assert request_count(attentive_emulator, "unsubscribe") == 6


def test_the_empty_model_message_names_only_what_is_missing(
    attentive_emulator: Emulator, warehouse: sqlite3.Connection, run_sync: RunSync
) -> None:
    run = mirror_of_six_now_empty(run_sync, warehouse)
    with pytest.raises(SyncAborted) as only_flag:
        run(max_removals=1.0)
    assert str(only_flag.value).endswith("set allow_empty_source=True.")
    with pytest.raises(SyncAborted) as only_cap:
        run(allow_empty_source=True)
    assert "set max_removals=1.0 (or 6) to empty the audience" in str(only_cap.value)
    assert request_count(attentive_emulator, "unsubscribe") == 0
