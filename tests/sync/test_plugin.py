"""The engine's seams: a new object type and a new delivery plug in without touching the engine.

The types and the delivery here exist only in this test module: that they run through ``SyncEngine`` unchanged
is what the seams promise.
"""

from __future__ import annotations

import ast
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import airflow_provider_attentive.sync as sync_package
from airflow_provider_attentive.client import AttentiveTransport, EndpointName, Result
from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.sync.delivery import BaseDelivery, PerRowDelivery
from airflow_provider_attentive.sync.engine import SyncEngine, SyncOptions
from airflow_provider_attentive.sync.object_type import Answer, Invalid, ObjectType, Planned, Prepared
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.state import StateStore
from tests.helpers.phones import phone
from tests.helpers.records import bodies, request_count

SYNC_PACKAGE = Path(sync_package.__file__).parent


class LoyaltyNotes(ObjectType):
    """A fourth object type: one text attribute per row, with a phase after the rows and its own counter."""

    object_type = "loyalty_notes"
    modes = ("upsert",)
    endpoint = EndpointName.ATTRIBUTES
    pending_status = "failed"

    def bind(self, run: Any) -> None:
        super().bind(run)
        self.observed = 0
        self.finished = False

    def summary_counters(self) -> dict[str, Any]:
        return {"notes_confirmed": 0}

    def default_mapping(self, pk_column: str) -> list[tuple[str, str]]:
        return [(c, c.lower()) for c in self.columns if c.lower() in ("phone", "note")]

    def observe(self, key: str, row: Sequence[Any]) -> None:
        self.observed += 1

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        values = {dest: row[i] for i, dest in self.fields}
        if not values.get("note"):
            return Invalid("no note")
        return Prepared(payload={"user": {"phone": values["phone"]}, "properties": {"note": str(values["note"])}})

    def read_ok(self, item: Planned, result: Result) -> Answer:
        self.run.summary.extra["notes_confirmed"] += 1
        return Answer(message="note stored")

    def after_rows(self) -> None:
        self.finished = True


def _notes(conn: sqlite3.Connection, n: int) -> None:
    conn.execute("DROP TABLE IF EXISTS notes")
    conn.execute("CREATE TABLE notes (id INTEGER, phone TEXT, note TEXT)")
    conn.executemany(
        "INSERT INTO notes VALUES (?, ?, ?)", [(i, phone(i), None if i == 0 else f"note {i}") for i in range(n)]
    )
    conn.commit()


def _engine(obj: ObjectType, conn: sqlite3.Connection, sender: Any, **kwargs: Any) -> SyncEngine:
    delivery = kwargs.pop("delivery", None)
    return SyncEngine(
        obj,
        SyncOptions(sync_id="notes", **kwargs),
        source=SqlSource(conn, "SELECT id, phone, note FROM notes"),
        state=StateStore(conn),
        sender=sender,
        delivery=delivery,
    )


def test_a_new_object_type_runs_through_the_unchanged_engine(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    _notes(warehouse, 30)
    notes = LoyaltyNotes(primary_key="id", mapping=None, default_region=None)
    summary = _engine(notes, warehouse, transport).run()

    assert summary["object_type"] == "loyalty_notes" and summary["mode"] == "upsert"
    assert summary["succeeded"]["added"] == 29 and summary["invalid"] == 1
    assert summary["notes_confirmed"] == 29
    assert notes.observed == 30 and notes.finished
    assert request_count(attentive_emulator, "attributes") == 29
    assert {b["properties"]["note"] for b in bodies(attentive_emulator, "attributes")} == {
        f"note {i}" for i in range(1, 30)
    }

    again = _engine(LoyaltyNotes(primary_key="id", mapping=None, default_region=None), warehouse, transport).run()
    assert again["unchanged"] == 29 and again["notes_confirmed"] == 0
    assert request_count(attentive_emulator, "attributes") == 29


class AnsweredLater(BaseDelivery):
    """A delivery whose answers arrive after the run that sent (the shape of a bulk job).

    ``deliver`` keeps the batches and answers nothing; ``reconcile``, in the next run, sends them and yields
    the answers, which the engine records like any other.
    """

    batch_size = 7

    def __init__(self, sender: AttentiveTransport) -> None:
        self.held: list[list[Planned]] = []
        self.per_row = PerRowDelivery(sender)

    def deliver(self, endpoint: str, batches: Iterable[Sequence[Planned]]) -> Iterator[tuple[Planned, Result]]:
        self.endpoint = endpoint
        for batch in batches:
            self.held.append(list(batch))
        return iter(())

    def reconcile(self) -> Iterator[tuple[Planned, Result]]:
        held, self.held = self.held, []
        return self.per_row.deliver(self.endpoint, held) if held else iter(())


def test_a_delivery_answered_later_is_recorded_by_the_next_run_without_a_resend(
    warehouse: sqlite3.Connection, transport: AttentiveTransport, attentive_emulator: Emulator
) -> None:
    _notes(warehouse, 21)
    delivery = AnsweredLater(transport)

    first = _engine(
        LoyaltyNotes(primary_key="id", mapping=None, default_region=None), warehouse, transport, delivery=delivery
    ).run()
    assert first["planned"]["added"] == 20 and first["succeeded"]["added"] == 0
    assert [len(batch) for batch in delivery.held] == [7, 7, 6]  # the delivery's batch size, not the run's
    assert request_count(attentive_emulator, "attributes") == 0

    second = _engine(
        LoyaltyNotes(primary_key="id", mapping=None, default_region=None), warehouse, transport, delivery=delivery
    ).run()
    assert request_count(attentive_emulator, "attributes") == 20  # answered once, never resent
    assert second["notes_confirmed"] == 20 and second["reconciled"] == {"ok": 20, "rejected": 0, "failed": 0}
    rows = warehouse.execute("SELECT status, COUNT(*) FROM attentive_sync_state GROUP BY status").fetchall()
    assert rows == [("ok", 20)]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_engine_knows_no_object_type_and_no_airflow() -> None:
    for module in ("engine.py", "delivery.py", "object_type.py", "options.py", "audience.py"):
        path = SYNC_PACKAGE / module
        imported = _imported_modules(path)
        assert not {m for m in imported if m.startswith("airflow_provider_attentive.sync.objects")}, module
        assert not {m for m in imported if m.startswith("airflow_provider_attentive.hooks")}, module
        assert not {m for m in imported if m == "airflow" or m.startswith("airflow.")}, module
        source = path.read_text()
        for name in ("AttributesType", "EventsType", "SubscriptionsType"):
            assert name not in source, f"{module} names {name}"
