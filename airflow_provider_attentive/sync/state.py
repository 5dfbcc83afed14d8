"""The sync state store: what Attentive has accepted, per sync and primary key, in any DB-API database.

Three tables (names share a configurable prefix, default ``attentive_``):

``<prefix>sync_state``
    one row per (sync_id, pk): the hash Attentive last accepted (``row_hash``), the hash last attempted
    (``attempt_hash``), ``status`` (``pending`` = intent written, outcome unknown; ``ok``; ``rejected`` =
    permanent 4xx; ``failed`` = transient, retried next run; ``in_doubt`` = may or may not have landed),
    subscription membership (``member``: ``subscribed`` / ``unsubscribed``) with times, and for
    subscriptions the identifiers needed to unsubscribe someone who left the model.
``<prefix>sync_log``
    one row per row-level outcome (sync id, run id, masked key, operation, status, HTTP status, message).
``<prefix>sync_lock``
    one row per running sync, with an expiry so a killed holder does not block forever.

The SQL is deliberately plain (no upsert syntax, no dialect types beyond VARCHAR/INTEGER) so the same code
runs on SQLite, PostgreSQL and other warehouses: the engine always knows whether a row exists because it
looked it up first, and the lock guarantees a single writer per sync.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_attentive.client.scrub import scrub
from airflow_provider_attentive.sync.errors import SyncConfigError, SyncLockedError
from airflow_provider_attentive.sync.values import mask_text

# Matched with fullmatch: "$" also matches before a final newline, which would let "name\n" into the SQL.
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOOKUP_CHUNK = 500
MESSAGE_MAX = 1000
#: the statuses this version writes; any other (or NULL) in a state row is held, never taken as "not sent"
KNOWN_STATUSES = frozenset({"pending", "ok", "rejected", "failed", "in_doubt", "submitted"})
#: the memberships this version writes (audience types); None = never a member
KNOWN_MEMBERS = frozenset({"subscribed", "unsubscribed", "preexisting", "in_segment", "out_of_segment"})


# Every column the engine reads or writes, with its type (for the repair statement a damaged table needs).
_COLUMNS = {
    "state": {
        "sync_id": "VARCHAR(250)", "pk": "VARCHAR(500)", "row_hash": "VARCHAR(64)", "attempt_hash": "VARCHAR(64)",
        "status": "VARCHAR(16)", "op": "VARCHAR(16)", "member": "VARCHAR(16)", "identity": "VARCHAR(1000)",
        "http_status": "INTEGER", "message": f"VARCHAR({MESSAGE_MAX})", "run_id": "VARCHAR(250)",
        "subscribed_at": "VARCHAR(32)", "unsubscribed_at": "VARCHAR(32)", "updated_at": "VARCHAR(32)",
        "job_id": "VARCHAR(100)",
    },
    "log": {
        "sync_id": "VARCHAR(250)", "run_id": "VARCHAR(250)", "pk": "VARCHAR(500)", "operation": "VARCHAR(16)",
        "status": "VARCHAR(16)", "http_status": "INTEGER", "message": f"VARCHAR({MESSAGE_MAX})",
        "logged_at": "VARCHAR(32)",
    },
    "lock": {"sync_id": "VARCHAR(250)", "holder": "VARCHAR(250)", "acquired_at": "VARCHAR(32)", "expires_at": "VARCHAR(32)"},
}  # fmt: skip


# Columns added after the first release, with NULL for old rows: added to existing tables on first use.
_ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"state": ("job_id",)}


def utcnow() -> str:
    """Fixed-width UTC timestamps, comparable as text on every database."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class StateRow:
    """What the state table knows about one primary key."""

    pk: str
    row_hash: str | None
    attempt_hash: str | None
    status: str | None
    op: str | None
    member: str | None
    identity: str | None
    run_id: str | None


@dataclass
class Intent:
    """A row about to be sent: written before the request so a crash leaves a trace."""

    pk: str
    op: str
    attempt_hash: str
    identity: str | None = None


@dataclass
class RowOutcome:
    """What happened to one row in this run."""

    pk: str
    op: str
    status: str  # ok | rejected | failed | in_doubt | invalid
    attempt_hash: str | None = None
    http_status: int | None = None
    message: str | None = None
    member: str | None = None  # new membership for subscriptions, None = unchanged
    log_key: str | None = None  # masked key for the log table
    write_state: bool = True  # False for rows that never had an intent (e.g. invalid rows)
    # False: the request was accepted but the row is not complete yet (a new subscriber's name attributes are
    # still to be written); row_hash stays as it was, so the next run finishes the row if this one does not.
    confirm: bool = True
    # The row's new identity (JSON) when the answer changes it (a segment member's former identifiers removed);
    # None leaves it as it is.
    identity: str | None = None


class StateStore:
    """Reads and writes sync state through a DB-API 2.0 connection.

    :param conn: an open DB-API connection (sqlite3, psycopg2, ...). The store commits after each batch.
    :param placeholder: the driver's parameter marker (``?`` for sqlite3, ``%s`` for psycopg2).
    :param table_prefix: prefix of the three table names.
    :param schema: optional schema (namespace) for the tables.
    """

    def __init__(
        self,
        conn: Any,
        *,
        placeholder: str = "?",
        table_prefix: str = "attentive_",
        schema: str | None = None,
    ) -> None:
        if not _IDENT.fullmatch(table_prefix.rstrip("_") or "x") or not _IDENT.fullmatch(table_prefix + "x"):
            raise SyncConfigError(f"state table prefix {table_prefix!r} must be letters, digits and underscores")
        if schema is not None and not _IDENT.fullmatch(schema):
            raise SyncConfigError(f"state schema {schema!r} must be letters, digits and underscores")
        self.conn = conn
        self.p = placeholder
        ns = f"{schema}." if schema else ""
        self.prefix = table_prefix
        self.state_table = f"{ns}{table_prefix}sync_state"
        self.log_table = f"{ns}{table_prefix}sync_log"
        self.lock_table = f"{ns}{table_prefix}sync_lock"

    # --- schema ----------------------------------------------------------------------------------------

    def ensure_tables(self) -> None:
        """Create the tables on first use (probing first, because not every database has IF NOT EXISTS)."""
        ddl = {
            self.state_table: f"""CREATE TABLE {self.state_table} (
                sync_id VARCHAR(250) NOT NULL,
                pk VARCHAR(500) NOT NULL,
                row_hash VARCHAR(64),
                attempt_hash VARCHAR(64),
                status VARCHAR(16),
                op VARCHAR(16),
                member VARCHAR(16),
                identity VARCHAR(1000),
                http_status INTEGER,
                message VARCHAR({MESSAGE_MAX}),
                run_id VARCHAR(250),
                subscribed_at VARCHAR(32),
                unsubscribed_at VARCHAR(32),
                updated_at VARCHAR(32),
                job_id VARCHAR(100),
                PRIMARY KEY (sync_id, pk)
            )""",
            self.log_table: f"""CREATE TABLE {self.log_table} (
                sync_id VARCHAR(250) NOT NULL,
                run_id VARCHAR(250) NOT NULL,
                pk VARCHAR(500),
                operation VARCHAR(16),
                status VARCHAR(16),
                http_status INTEGER,
                message VARCHAR({MESSAGE_MAX}),
                logged_at VARCHAR(32)
            )""",
            self.lock_table: f"""CREATE TABLE {self.lock_table} (
                sync_id VARCHAR(250) NOT NULL PRIMARY KEY,
                holder VARCHAR(250) NOT NULL,
                acquired_at VARCHAR(32),
                expires_at VARCHAR(32) NOT NULL
            )""",
        }
        for table, create in ddl.items():
            if self.create_table(table, create) and table == self.state_table:
                self._create_status_index()
        self._add_columns(_ADDED_COLUMNS)
        self.check_columns()

    def table_name(self, name: str) -> str:
        """The full name of a table beside the state tables (same schema and prefix): ``sync_jobs``, say."""
        schema, _, _ = self.state_table.rpartition(".")
        return f"{schema + '.' if schema else ''}{self.prefix}{name}"

    def create_table(self, table: str, create: str) -> bool:
        """Run ``create`` unless ``table`` exists; True when this call created it.

        Probed first, because not every database has IF NOT EXISTS; a failure because another process created it
        meanwhile is not an error.
        """
        if self._exists(table):
            return False
        try:
            self._execute(create)
            self.conn.commit()
        except Exception:
            self.conn.rollback()
            if not self._exists(table):
                raise
            return False
        return True

    def _add_columns(self, added: dict[str, tuple[str, ...]]) -> None:
        """Add the nullable columns later versions introduced to tables an earlier version created."""
        tables = {"state": self.state_table, "log": self.log_table, "lock": self.lock_table}
        for kind, columns in added.items():
            table = tables[kind]
            for column in columns:
                if self._has_column(table, column):
                    continue
                try:
                    self._execute(f"ALTER TABLE {table} ADD COLUMN {column} {_COLUMNS[kind][column]}")
                    self.conn.commit()
                except Exception:
                    self.conn.rollback()  # another run added it meanwhile, or the check below names it

    def check_columns(self) -> None:
        """Raise :class:`SyncConfigError`, before anything is sent, when a state table lacks a column.

        Without this a damaged table (a column dropped by hand, a half-finished migration) would let requests
        go out and then fail to record their outcomes.
        """
        tables = {
            self.state_table: _COLUMNS["state"],
            self.log_table: _COLUMNS["log"],
            self.lock_table: _COLUMNS["lock"],
        }
        for table, all_columns in tables.items():
            # Columns a later version added are created by the next live run, so a dry run does not need them.
            kind = {self.state_table: "state", self.log_table: "log", self.lock_table: "lock"}[table]
            columns = {c: t for c, t in all_columns.items() if c not in _ADDED_COLUMNS.get(kind, ())}
            if not self._exists(table) or self._has_column(table, ", ".join(columns)):
                continue  # one probe per table when it is whole; column by column only to name what is missing
            missing = [c for c in columns if not self._has_column(table, c)]
            if missing:
                repair = "; ".join(f"ALTER TABLE {table} ADD COLUMN {c} {columns[c]}" for c in missing)
                raise SyncConfigError(
                    f"state table {table} lacks column(s) {', '.join(missing)}; nothing was sent. Repair it with: "
                    f"{repair}. (Renaming the table away instead makes the provider create it anew, and the sync "
                    "then starts from empty state and sends every row again.)"
                )

    def _has_column(self, table: str, column: str) -> bool:
        return self._answers(f"SELECT {column} FROM {table} WHERE 1 = 0")

    def _create_status_index(self) -> None:
        # Every run looks for its sync's pending and in-doubt rows; without an index that is a scan of all the
        # sync's keys (seconds at ten million). Index names live in the table's schema, so no prefix here.
        try:
            self._execute(f"CREATE INDEX {self.prefix}sync_state_status ON {self.state_table} (sync_id, status)")
            self.conn.commit()
        except Exception:  # an optimisation only: a database that refuses it still works, just slower
            self.conn.rollback()

    def tables_exist(self) -> bool:
        """True when the state table is there (a dry run reads state but never creates it)."""
        return self._exists(self.state_table)

    def _exists(self, table: str) -> bool:
        return self._answers(f"SELECT 1 FROM {table} WHERE 1 = 0")

    def _answers(self, probe: str) -> bool:
        """Whether a probe that reads no row runs (a table or column exists); a failure is rolled back."""
        cur = self.conn.cursor()
        try:
            cur.execute(probe)
            cur.fetchall()
            return True
        except Exception:
            self.conn.rollback()
            return False
        finally:
            _close(cur)

    # --- reads -----------------------------------------------------------------------------------------

    def lookup(self, sync_id: str, keys: Sequence[str]) -> dict[str, StateRow]:
        """State rows for ``keys`` (those that exist)."""
        found: dict[str, StateRow] = {}
        cols = "pk, row_hash, attempt_hash, status, op, member, identity, run_id"
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ", ".join([self.p] * len(chunk))
            sql = f"SELECT {cols} FROM {self.state_table} WHERE sync_id = {self.p} AND pk IN ({marks})"
            for row in self._query(sql, (sync_id, *chunk)):
                found[row[0]] = StateRow(*row)
        return found

    def rows_with_status(self, sync_id: str, statuses: Sequence[str]) -> list[StateRow]:
        marks = ", ".join([self.p] * len(statuses))
        sql = (
            "SELECT pk, row_hash, attempt_hash, status, op, member, identity, run_id "
            f"FROM {self.state_table} WHERE sync_id = {self.p} AND status IN ({marks})"
        )
        return [StateRow(*row) for row in self._query(sql, (sync_id, *statuses))]

    def iter_members(self, sync_id: str) -> Iterator[str]:
        """Primary keys this sync has subscribed and not unsubscribed since."""
        sql = f"SELECT pk FROM {self.state_table} WHERE sync_id = {self.p} AND member = {self.p}"
        for row in self._query(sql, (sync_id, "subscribed")):
            yield row[0]

    def iter_rows(self, sync_id: str, chunk: int = 10_000) -> Iterator[StateRow]:
        """Every state row of a sync, read in chunks (an audience type's scan of who it tracks)."""
        cur = self._execute(
            "SELECT pk, row_hash, attempt_hash, status, op, member, identity, run_id "
            f"FROM {self.state_table} WHERE sync_id = {self.p}",
            (sync_id,),
        )
        try:
            while rows := cur.fetchmany(chunk):
                for row in rows:
                    yield StateRow(*row)
        finally:
            _close(cur)

    # --- writes ----------------------------------------------------------------------------------------

    def write_intents(self, sync_id: str, run_id: str, intents: Sequence[Intent], existing: set[str]) -> None:
        """Record, in one transaction, that these rows are about to be sent (write-ahead)."""
        if not intents:
            return
        now = utcnow()
        inserts = [
            (sync_id, i.pk, i.attempt_hash, "pending", i.op, i.identity, run_id, now)
            for i in intents
            if i.pk not in existing
        ]
        updates = [
            (i.attempt_hash, "pending", i.op, i.identity, run_id, now, sync_id, i.pk)
            for i in intents
            if i.pk in existing
        ]
        p = self.p
        try:
            if inserts:
                self._executemany(
                    f"INSERT INTO {self.state_table} (sync_id, pk, attempt_hash, status, op, identity, run_id, "
                    f"updated_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})",
                    inserts,
                )
            if updates:
                self._executemany(
                    f"UPDATE {self.state_table} SET attempt_hash = {p}, status = {p}, op = {p}, "
                    f"identity = COALESCE({p}, identity), run_id = {p}, updated_at = {p} "
                    f"WHERE sync_id = {p} AND pk = {p}",
                    updates,
                )
            self.conn.commit()
        except Exception:
            # sqlite3 keeps the rows an executemany wrote before failing; the next commit (of outcomes) would
            # then record intents for requests that were never sent, and the next run would call them in doubt.
            self.conn.rollback()
            raise
        existing.update(i.pk for i in intents)

    def write_outcomes(self, sync_id: str, run_id: str, outcomes: Sequence[RowOutcome], *, log: bool = True) -> None:
        """Record outcomes (state + row log) in one transaction. A hash becomes ``row_hash`` only on ok."""
        if not outcomes:
            return
        now = utcnow()
        p = self.p
        ok = [o for o in outcomes if o.write_state and o.status == "ok"]
        other = [o for o in outcomes if o.write_state and o.status != "ok"]
        if ok:
            self._executemany(
                f"UPDATE {self.state_table} SET row_hash = CASE WHEN {p} = 1 THEN attempt_hash ELSE row_hash END, "
                f"status = {p}, http_status = {p}, "
                f"message = {p}, member = COALESCE({p}, member), identity = COALESCE({p}, identity), "
                f"subscribed_at = CASE WHEN {p} = 'subscribed' THEN {p} ELSE subscribed_at END, "
                f"unsubscribed_at = CASE WHEN {p} = 'unsubscribed' THEN {p} ELSE unsubscribed_at END, "
                f"run_id = {p}, updated_at = {p} WHERE sync_id = {p} AND pk = {p}",
                [
                    (
                        1 if o.confirm else 0,
                        "ok",
                        o.http_status,
                        _trim(o.message),
                        o.member,
                        o.identity,
                        o.member or "",
                        now,
                        o.member or "",
                        now,
                        run_id,
                        now,
                        sync_id,
                        o.pk,
                    )
                    for o in ok
                ],
            )
        if other:
            self._executemany(
                f"UPDATE {self.state_table} SET status = {p}, http_status = {p}, message = {p}, "
                f"member = COALESCE({p}, member), identity = COALESCE({p}, identity), run_id = {p}, updated_at = {p} "
                f"WHERE sync_id = {p} AND pk = {p}",
                [
                    (o.status, o.http_status, _trim(o.message), o.member, o.identity, run_id, now, sync_id, o.pk)
                    for o in other
                ],
            )
        if log:
            self._executemany(
                f"INSERT INTO {self.log_table} (sync_id, run_id, pk, operation, status, http_status, message, "
                f"logged_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})",
                [
                    (sync_id, run_id, o.log_key or o.pk, o.op, o.status, o.http_status, _trim(o.message), now)
                    for o in outcomes
                ],
            )
        self.conn.commit()

    def confirm_hashes(self, sync_id: str, hashes: Sequence[tuple[str, str]]) -> None:
        """Mark rows complete with these hashes (``(pk, row_hash)``), e.g. once a subscriber's names are written."""
        if not hashes:
            return
        p = self.p
        self._executemany(
            f"UPDATE {self.state_table} SET row_hash = {p}, updated_at = {p} WHERE sync_id = {p} AND pk = {p}",
            [(row_hash, utcnow(), sync_id, pk) for pk, row_hash in hashes],
        )
        self.conn.commit()

    def prune_log(self, sync_id: str, older_than: dt.datetime) -> None:
        cutoff = older_than.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._execute(
            f"DELETE FROM {self.log_table} WHERE sync_id = {self.p} AND logged_at < {self.p}", (sync_id, cutoff)
        )
        self.conn.commit()

    # --- lock ------------------------------------------------------------------------------------------

    def acquire_lock(
        self,
        sync_id: str,
        holder: str,
        *,
        ttl_s: float,
        wait_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Take the per-sync lock, waiting up to ``wait_s`` for a live holder; an expired lock is taken over."""
        deadline = time.monotonic() + wait_s
        while True:
            if self._try_lock(sync_id, holder, ttl_s):
                return
            current = self._lock_row(sync_id)
            if time.monotonic() >= deadline:
                who = current[0] if current else "another run"
                until = current[1] if current else "?"
                raise SyncLockedError(
                    f"sync {sync_id!r} is locked by {who} (lock expires {until}); another run of this sync is "
                    f"in progress. Waited {wait_s:.0f}s. Two runs must not send at once; retry later."
                )
            sleep(min(2.0, max(0.05, deadline - time.monotonic())))

    def _try_lock(self, sync_id: str, holder: str, ttl_s: float) -> bool:
        p = self.p
        now = utcnow()
        expires = _in(ttl_s)
        try:
            self._execute(
                f"INSERT INTO {self.lock_table} (sync_id, holder, acquired_at, expires_at) VALUES ({p}, {p}, {p}, {p})",
                (sync_id, holder, now, expires),
            )
            self.conn.commit()
            return True
        except Exception:
            self.conn.rollback()
            row = self._lock_row(sync_id)
            if row is None:
                raise  # not a conflict with another holder: a real error (e.g. a value too long)
        if row is None:  # pragma: no cover - the row existed a moment ago and was released since
            return False
        old_holder, old_expiry = row
        if old_holder != holder and old_expiry > now:
            return False
        # Compare-and-swap on the old expiry: of two runs taking over an expired lock, one wins.
        cur = self._execute(
            f"UPDATE {self.lock_table} SET holder = {p}, acquired_at = {p}, expires_at = {p} "
            f"WHERE sync_id = {p} AND holder = {p} AND expires_at = {p}",
            (holder, now, expires, sync_id, old_holder, old_expiry),
        )
        won = getattr(cur, "rowcount", 0) == 1
        self.conn.commit()
        return won

    def _lock_row(self, sync_id: str) -> tuple[str, str] | None:
        rows = self._query(f"SELECT holder, expires_at FROM {self.lock_table} WHERE sync_id = {self.p}", (sync_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    def refresh_lock(self, sync_id: str, holder: str, ttl_s: float) -> bool:
        """Extend our lock; False when it was lost (expired and taken over)."""
        p = self.p
        cur = self._execute(
            f"UPDATE {self.lock_table} SET expires_at = {p} WHERE sync_id = {p} AND holder = {p}",
            (_in(ttl_s), sync_id, holder),
        )
        held = getattr(cur, "rowcount", 0) == 1
        self.conn.commit()
        return held

    def release_lock(self, sync_id: str, holder: str) -> None:
        # Called from the engine's ``finally``, possibly after a failed statement on this connection: on
        # PostgreSQL that aborts the transaction and the DELETE fails until a rollback, so roll back and retry
        # once rather than leave the lock held until it expires.
        for _ in range(2):
            try:
                self._execute(
                    f"DELETE FROM {self.lock_table} WHERE sync_id = {self.p} AND holder = {self.p}", (sync_id, holder)
                )
                self.conn.commit()
                return
            except Exception:
                self.conn.rollback()

    # --- plumbing --------------------------------------------------------------------------------------

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self.conn.cursor()
        cur.execute(sql, tuple(params))
        return cur

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        cur = self.conn.cursor()
        try:
            cur.executemany(sql, list(rows))
        finally:
            _close(cur)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        try:
            cur.execute(sql, tuple(params))
            return [tuple(r) for r in cur.fetchall()]
        finally:
            _close(cur)


def _trim(message: str | None) -> str | None:
    if message is None:
        return None
    # Scrubbed before the cut: a cut through a bearer token would leave a prefix that no longer looks like one.
    # Phones and emails Attentive quotes in a refusal are masked like every key in the log table.
    message = mask_text(scrub(message))
    return message if len(message) <= MESSAGE_MAX else message[: MESSAGE_MAX - 3] + "..."


def _in(seconds: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _close(cur: Any) -> None:
    with contextlib.suppress(Exception):
        cur.close()
