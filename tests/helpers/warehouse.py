"""SQLite warehouses for the tests: the model tables a sync reads, and a file-backed warehouse with state readers.

The table builders take an open ``sqlite3`` connection or a :class:`Warehouse` file (which opens a connection
of its own for each call, as a process that may be SIGKILLed next to it must), and commit what they write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tests.helpers.phones import phone

__all__ = ("Warehouse", "create_customers", "create_orders", "set_members")


class Warehouse:
    """A SQLite file: the model's tables and the sync's state tables. Every helper opens its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def execute(self, sql: str, params: Any = ()) -> None:
        with self.connect() as conn:
            conn.execute(sql, params)
        conn.close()

    def executemany(self, sql: str, rows: Any) -> None:
        with self.connect() as conn:
            conn.executemany(sql, rows)
        conn.close()

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    def state(self, sync_id: str) -> dict[str, dict[str, Any]]:
        cols = ("pk", "row_hash", "attempt_hash", "status", "op", "member", "identity", "message")
        rows = self.query(f"SELECT {', '.join(cols)} FROM attentive_sync_state WHERE sync_id = ?", (sync_id,))
        return {r[0]: dict(zip(cols, r, strict=True)) for r in rows}

    def statuses(self, sync_id: str) -> Counter[str]:
        return Counter(r["status"] for r in self.state(sync_id).values())

    def log(self, sync_id: str) -> list[dict[str, Any]]:
        cols = ("run_id", "pk", "operation", "status", "http_status", "message")
        rows = self.query(f"SELECT {', '.join(cols)} FROM attentive_sync_log WHERE sync_id = ?", (sync_id,))
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def lock(self, sync_id: str) -> tuple[str, str] | None:
        rows = self.query("SELECT holder, expires_at FROM attentive_sync_lock WHERE sync_id = ?", (sync_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def wait_lock_expiry(self, sync_id: str) -> float:
        """Sleep until a lock left by a killed run has expired; return the seconds waited."""
        lock = self.lock(sync_id)
        if lock is None:
            return 0.0
        expires = dt.datetime.strptime(lock[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
        wait = (expires - dt.datetime.now(dt.timezone.utc)).total_seconds() + 0.02
        if wait > 0:
            time.sleep(wait)
        return max(0.0, wait)


@contextlib.contextmanager
def _writing(db: sqlite3.Connection | Warehouse) -> Iterator[sqlite3.Connection]:
    """A connection to write through, committed afterwards (and closed, when it was opened here)."""
    if isinstance(db, sqlite3.Connection):
        yield db
        db.commit()
        return
    conn = db.connect()
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


def create_customers(db: sqlite3.Connection | Warehouse, n: int, *, table: str = "customers") -> None:
    """``table`` (replaced) with ``n`` customers: id, phone, email, a gold/silver tier and a lifetime value."""
    with _writing(db) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (customer_id INTEGER, phone TEXT, email TEXT, loyalty_tier TEXT, ltv REAL)")
        conn.executemany(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?)",
            [(i, phone(i), f"user{i}@example.com", ("gold", "silver")[i % 2], round(i * 10.5, 2)) for i in range(n)],
        )


def create_orders(db: sqlite3.Connection | Warehouse, n: int) -> None:
    """``orders (id, phone)`` with ``n`` rows, order ``i`` placed by ``phone(i)``."""
    with _writing(db) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER, phone TEXT)")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, phone(i)) for i in range(n)])


def set_members(db: sqlite3.Connection | Warehouse, ids: Iterable[int], *, emails: bool = False) -> None:
    """Make ``members (phone, email, first_name)`` hold ``phone(i)`` for each of ``ids``, in order of ``i``.

    With ``emails``, member ``i`` also has ``m<i>@example.com``; ``first_name`` stays NULL.
    """
    with _writing(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS members (phone TEXT, email TEXT, first_name TEXT)")
        conn.execute("DELETE FROM members")
        conn.executemany(
            "INSERT INTO members VALUES (?, ?, NULL)",
            [(phone(i), f"m{i}@example.com" if emails else None) for i in sorted(ids)],
        )
