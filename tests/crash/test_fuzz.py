"""Hypothesis rows never crash a run: each row is sent, or reported invalid (or rejected) with a reason.

Odd unicode, huge strings, NaN and infinities, nested JSON, NULLs, numbers (and garbage) as phones, keys of
mixed types. The engine runs in-process against the emulator and a real SQLite file; neither the API key nor
any phone number may appear in the captured logs or output, or in the sync log table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.objects import AttributesType, EventsType, Invalid, ObjectType, key_text
from airflow_provider_attentive.sync.values import mask_key, normalize_phone, printable
from tests.helpers.crash import assert_accounted
from tests.helpers.engine import sync_engine, transport
from tests.helpers.objects import subs
from tests.helpers.phones import phone
from tests.helpers.records import request_count

FUZZ_KEY = "sk-fuzz-2b7e151628aed2a6abf71588"
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies ----------------------------------------------------------------------------------------

odd_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # SQLite cannot store surrogates
huge_text = st.builds(lambda c, n: c * n, st.characters(blacklist_categories=("Cs",)), st.integers(5_000, 60_000))
floats = st.floats(allow_nan=True, allow_infinity=True)
ints = st.integers(-(2**63), 2**63 - 1)
json_leaf = st.none() | st.booleans() | floats | st.integers(-(2**70), 2**70) | odd_text
nested = st.recursive(
    json_leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(odd_text, kids, max_size=3), max_leaves=12
)
json_text = nested.map(json.dumps)  # json.dumps writes NaN and Infinity, which are not JSON
json_object = st.dictionaries(odd_text, nested, max_size=4).map(json.dumps)
values = st.none() | odd_text | huge_text | floats | ints | json_text | st.binary(max_size=16) | st.booleans()
valid_phone = st.integers(0, 99_999).map(phone)
phones = (
    valid_phone  # listed three times: a third of the rows should be deliverable
    | valid_phone
    | valid_phone
    | valid_phone.map(lambda p: int(p[1:]))  # 1415...: a number with its country code
    | valid_phone.map(lambda p: int(p[2:]))  # a national number (needs default_region)
    | valid_phone.map(lambda p: float(p[1:]))
    | valid_phone.map(lambda p: f"({p[2:5]}) {p[5:8]}-{p[8:]}")
    | valid_phone.map(lambda p: "00" + p[1:])
    | st.none()
    | floats
    | odd_text
    | huge_text
    | ints
)
keys = st.integers(-(2**63), 2**63 - 1) | st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300)
keys |= st.floats(allow_nan=False, allow_infinity=False)


def _sqlite_identity(value: Any) -> tuple[str, Any]:
    # The warehouse's own uniqueness: SQLite compares 1 and 1.0 equal, and 1 and '1' different.
    return ("n", float(value)) if isinstance(value, int | float) else ("t", value)


def rows(n: int = 20) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    key_list = st.lists(keys, min_size=1, max_size=n, unique_by=_sqlite_identity)
    return key_list.flatmap(
        lambda ks: st.tuples(*[st.tuples(st.just(k), phones, values, values, json_object | values) for k in ks])
    ).map(list)


# --- the run -------------------------------------------------------------------------------------------


@pytest.fixture
def fuzz_emulator(attentive_emulator: Emulator) -> Iterator[Emulator]:
    attentive_emulator.client.add_key(FUZZ_KEY)
    yield attentive_emulator


def run_engine(emu: Emulator, obj: ObjectType, table: list[tuple[Any, ...]], **options: Any) -> dict[str, Any]:
    emu.client.reset()
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "warehouse.db")
        conn.execute("CREATE TABLE fuzz (id, phone, a, b, props)")  # no affinity: values stay as generated
        conn.executemany("INSERT INTO fuzz VALUES (?, ?, ?, ?, ?)", table)
        conn.commit()
        opts: dict[str, Any] = {"sync_id": "fuzz", "max_failed_ratio": 1.0, "batch_size": 7, "chunk_size": 9, **options}
        with transport(emu.url, api_key=FUZZ_KEY) as sender:
            summary = sync_engine(obj, conn, "SELECT * FROM fuzz", sender=sender, chunk=9, **opts).run()
        state = {r[0]: r[1] for r in conn.execute("SELECT pk, status FROM attentive_sync_state")}
        log = conn.execute("SELECT pk, status, message FROM attentive_sync_log").fetchall()
        conn.close()
    check_every_row(table, summary, state, log, obj)
    return summary


def check_every_row(
    table: list[tuple[Any, ...]],
    summary: dict[str, Any],
    state: dict[str, str],
    log: list[tuple[Any, ...]],
    obj: ObjectType,
) -> None:
    reasons = {(pk, status): message for pk, status, message in log}
    for row in table:
        key = obj.key_of(row)  # the state key: the primary key, or the E.164 phone for subscriptions
        if key is not None and state.get(key) == "ok":
            continue
        prepared = obj.prepare(row, key) if key is not None else None
        if isinstance(prepared, Invalid) and prepared.empty:
            assert summary["nothing_to_send"], "a row with nothing to send was not counted"
            continue
        # Keys are logged as every database stores them (a NUL escaped), and one with a NUL is invalid everywhere.
        shown = {printable(mask_key(key_text(row[0])))} | ({printable(mask_key(key))} if key is not None else set())
        reported = [reasons.get((k, s)) for k in shown for s in ("invalid", "rejected")]
        assert any(reported), f"row {mask_key(key_text(row[0]))!r} was neither sent nor reported with a reason"
    assert "failed" not in state.values() and "pending" not in state.values()
    assert summary["rows_read"] == len(table)


def phones_in(table: list[tuple[Any, ...]]) -> list[str]:
    """Every phone number the rows hold, as sent (E.164) and as written in the warehouse."""
    out = set()
    for row in table:
        raw = row[1]
        if isinstance(raw, int | float | str) and not isinstance(raw, bool):
            for region in (None, "US"):
                with contextlib.suppress(ValueError):
                    out.add(normalize_phone(raw, region))
            text = str(int(raw)) if isinstance(raw, float) and raw == raw and abs(raw) < 1e18 else str(raw)
            if sum(c.isdigit() for c in text) >= 9 and len(text) < 40:
                out.add(text.strip())
    return sorted(out)


def assert_clean(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], table: list, log: Any) -> None:
    captured = capfd.readouterr()
    text = "\n".join([caplog.text, captured.out, captured.err, repr(log)])
    assert FUZZ_KEY not in text, "the API key appears in the logs"
    for p in phones_in(table):
        assert p not in text, f"a phone number appears in the logs ({p[:3]}...)"
        assert p.replace("+", "%2B") not in text
    caplog.clear()


# --- tests ---------------------------------------------------------------------------------------------


@SETTINGS
@given(table=rows())
def test_fuzzed_attribute_rows_are_sent_or_reported(
    fuzz_emulator: Emulator, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], table: list
) -> None:
    caplog.set_level(logging.DEBUG)
    obj = AttributesType(
        primary_key="id",
        mapping={"phone": "phone", "a": "tier", "b": "note", "props": "details"},
        default_region="US",  # numbers without +1 are read as US numbers
    )
    summary = run_engine(fuzz_emulator, obj, table)
    assert_accounted(summary)
    assert_clean(caplog, capfd, table, summary)


@SETTINGS
@given(table=rows())
def test_fuzzed_event_rows_are_sent_or_reported(
    fuzz_emulator: Emulator, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], table: list
) -> None:
    caplog.set_level(logging.DEBUG)
    obj = EventsType(
        sync_id="fuzz",
        event_type="Fuzzed Event",
        primary_key="id",
        mapping={"phone": "phone", "a": "properties.a", "b": "timestamp", "props": "properties"},
        default_region=None,  # E.164 only: every national number must be reported, not guessed
    )
    summary = run_engine(fuzz_emulator, obj, table)
    assert_accounted(summary)
    events = fuzz_emulator.client.events()
    assert len(events) == sum(summary["succeeded"].values())
    assert_clean(caplog, capfd, table, summary)


@SETTINGS
@given(table=rows())
def test_fuzzed_subscriber_rows_are_sent_or_reported(
    fuzz_emulator: Emulator, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], table: list
) -> None:
    caplog.set_level(logging.DEBUG)
    obj = subs(
        primary_key="id",
        mapping={"phone": "phone", "a": "first_name", "b": "email"},
        default_region="US",
        single_opt_in=True,
    )
    summary = run_engine(fuzz_emulator, obj, table, mode="add")
    # Rows sharing a phone are one subscriber: counted as shared_phones, or unchanged once the first is recorded.
    accounted = summary["invalid"] + sum(summary["succeeded"].values()) + sum(summary["failed"].values())
    assert accounted + summary["shared_phones"] + summary["unchanged"] == len(table)
    assert_clean(caplog, capfd, table, summary)


def test_keys_equal_as_text_but_distinct_in_the_warehouse_are_reported_not_a_crash(
    fuzz_emulator: Emulator, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Regression: 1 and '1' pass the warehouse's uniqueness check but share one key; the second intent used
    to fail the INSERT into the state table and the run with it."""
    table = [(1, phone(1), "a", None, None), ("1", phone(2), "b", None, None), (2.0, phone(3), "c", None, None)]
    obj = AttributesType(primary_key="id", mapping={"phone": "phone", "a": "tier"}, default_region=None)
    summary = run_engine(fuzz_emulator, obj, table)
    assert summary["succeeded"]["added"] == 2 and summary["invalid"] == 1
    assert summary["errors"] == [{"key": "1", "reason": "primary key appears twice in the model"}]
    assert_clean(caplog, capfd, table, summary)


def test_a_key_repeated_in_a_later_chunk_while_its_first_request_is_in_flight_is_not_sent_twice(
    attentive_emulator: Emulator, tmp_path: Path
) -> None:
    """Regression: the duplicate check used to see only requests of the current chunk."""
    client = attentive_emulator.client
    client.set_faults(latency_ms=300, endpoints=["subscribe"])  # the first subscribe is still in flight
    conn = sqlite3.connect(tmp_path / "warehouse.db")
    conn.execute("CREATE TABLE members (id, phone)")
    conn.executemany("INSERT INTO members VALUES (?, ?)", [(1, phone(7)), ("1", phone(7))])
    conn.commit()
    obj = subs(primary_key="id", mapping={"phone": "phone"}, single_opt_in=True)
    options: dict[str, Any] = {"sync_id": "fuzz.chunks", "mode": "add", "max_failed_ratio": 1.0, "chunk_size": 1}
    with transport(attentive_emulator.url) as sender:
        summary = sync_engine(obj, conn, "SELECT id, phone FROM members", sender=sender, chunk=1, **options).run()
    # Two rows, one phone: one subscriber, subscribed once (the second row waits for nothing and is not invalid).
    assert summary["succeeded"]["added"] == 1 and summary["shared_phones"] == 1 and summary["invalid"] == 0
    assert request_count(client, "subscribe") == 1 and client.stats()["repeat_subscribes"] == 0
    conn.close()
