"""The shared rate budget in a SQL table (connection extra ``rate_limit_backend = "sql"``).

:class:`SqlRateLimiter` needs nothing but a DB-API connection and portable SQL: one row per key
fingerprint and endpoint holds the next free slot, advanced by a compare-and-swap on a version column.
Slots are spaced ``(1 s + margin) / rate`` apart in wall-clock time (hosts must be NTP-synchronised; skew
eats into the margin; the default margin is 50 ms). A request that is about to go out more than half the
margin after its slot (checked when it wakes and again just before its headers are written) books a new
one and leaves the old slot unused. Each booking is a database round trip, so it suits low rates
(subscribe, unsubscribe, identity: 5-10 requests/s) best; at 150 requests/s prefer Redis. Outages fall
back to a local share (see :mod:`~airflow_provider_attentive.client.ratelimit.shared`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_attentive.client.ratelimit.base import DEFAULT_SMOOTHING, MARGIN_STEP_S, MAX_MARGIN_S, Permit
from airflow_provider_attentive.client.ratelimit.shared import (
    PEER_HORIZON_S,
    RateLimitBackendUnavailable,
    SharedRateLimiter,
)

__all__ = ["SQL_DEFAULT_MARGIN_S", "SqlRateLimiter"]

# The SQL backend cannot re-check starts, so it gets a wider default margin.
SQL_DEFAULT_MARGIN_S = 0.05
_SQL_MAX_LATE_REBOOKS = 5
# Matched with fullmatch: "$" also matches before a final newline, which would let "name\n" into the SQL.
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class _SqlPermit:
    """A booked slot; :meth:`before_send` (awaited by the transport just before the request is written)
    takes a new slot if the request is about to go out too late for this one."""

    __slots__ = ("endpoint", "limiter", "slot")

    def __init__(self, limiter: SqlRateLimiter, endpoint: str, slot: float) -> None:
        self.limiter = limiter
        self.endpoint = endpoint
        self.slot = slot

    async def before_send(self) -> None:
        await self.limiter._before_send(self)

    def sent(self) -> None:
        pass


class SqlRateLimiter(SharedRateLimiter):
    """A :class:`~airflow_provider_attentive.client.ratelimit.base.RateLimiter` whose budget is a SQL table.

    ``connect`` opens a DB-API connection (called in the limiter's own worker thread, which then owns
    it); ``placeholder`` is the driver's parameter marker (``?`` for sqlite3, ``%s`` for psycopg2).
    The table (default ``attentive_rate_limit``) is created if missing: one row per budget fingerprint
    and endpoint (``next_slot_us``, ``version``), plus one heartbeat row per live limiter. Creating one
    checks that the database answers, else raises :class:`RateLimitBackendUnavailable`. Best for low
    rates; see the module docstring.
    """

    backend = "sql"

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        base_url: str,
        api_key: str,
        rates: Mapping[str, float],
        share: float | None = None,
        placeholder: str = "?",
        table: str = "attentive_rate_limit",
        margin_s: float = SQL_DEFAULT_MARGIN_S,
        smoothing: float = DEFAULT_SMOOTHING,
        timeout_s: float = 2.0,
        description: str = "the rate-limit database",
    ) -> None:
        super().__init__(
            base_url=base_url, api_key=api_key, rates=rates, share=share, margin_s=margin_s, smoothing=smoothing
        )
        if not _TABLE_NAME.fullmatch(table):
            raise ValueError(f"invalid rate-limit table name {table!r}")
        self._connect = connect
        self._p = placeholder
        self._table = table
        self._timeout_s = timeout_s
        self._description = description
        self._outage_errors = (Exception,)
        self._conn: Any = None
        self._lead_s = 0.002
        self._not_before: dict[str, float] = {}
        self._margins: dict[str, float] = {}
        self._heartbeat_due = 0.0
        self._executor: concurrent.futures.ThreadPoolExecutor | None = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="attentive-sql-ratelimit"
        )
        try:
            self._executor.submit(self._setup).result()
        except Exception as exc:
            self.close()
            raise RateLimitBackendUnavailable(
                f"rate_limit_backend 'sql': cannot use {description} ({type(exc).__name__}: {exc}). Check the "
                "database behind rate_limit_sql_conn_id; to sync without a shared budget set rate_limit_backend "
                "to 'local'."
            ) from None

    def __repr__(self) -> str:
        return f"SqlRateLimiter({self._description!r}, table={self._table!r}, fingerprint={self._fingerprint!r})"

    # -- worker-thread side --------------------------------------------------------------------------------

    def _db(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _rollback(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.rollback()

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, int]:
        cur = self._db().cursor()
        try:
            cur.execute(sql.replace("?", self._p), params)
            row = cur.fetchone() if cur.description else None
            return row, cur.rowcount
        finally:
            with contextlib.suppress(Exception):
                cur.close()

    def _setup(self) -> None:
        try:
            self._execute(f"SELECT bucket FROM {self._table} WHERE 1 = 0")
            self._db().commit()
        except Exception:
            self._rollback()
            try:
                self._execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table} (bucket VARCHAR(120) NOT NULL PRIMARY KEY, "
                    "next_slot_us BIGINT NOT NULL, version BIGINT NOT NULL)"
                )
                self._db().commit()
            except Exception:
                # Another process may have created it at the same moment; the check below decides.
                self._rollback()
            self._execute(f"SELECT bucket FROM {self._table} WHERE 1 = 0")
            self._db().commit()
        self._heartbeat()

    def _client_bucket(self) -> str:
        return f"{self._fingerprint}:client:{self._client_id}"

    def _heartbeat(self) -> None:
        """Refresh this limiter's heartbeat row, drop stale ones, count live ones (the N of 1/N)."""
        now = _wall_us()
        horizon = now - int(PEER_HORIZON_S * 1e6)
        mine = self._client_bucket()
        _, updated = self._execute(f"UPDATE {self._table} SET next_slot_us = ? WHERE bucket = ?", (now, mine))
        if updated != 1:
            self._execute(f"INSERT INTO {self._table} (bucket, next_slot_us, version) VALUES (?, ?, 0)", (mine, now))
        like = f"{self._fingerprint}:client:%"
        self._execute(f"DELETE FROM {self._table} WHERE bucket LIKE ? AND next_slot_us < ?", (like, horizon))
        row, _ = self._execute(f"SELECT COUNT(*) FROM {self._table} WHERE bucket LIKE ?", (like,))
        self._db().commit()
        self._peers = max(1, int(row[0]) if row else 1)
        self._heartbeat_due = time.monotonic() + 10.0

    def _book(self, endpoint_name: str, spacing_us: int, not_before_us: int) -> int:
        """Compare-and-swap the endpoint's next free slot; return the slot booked (wall-clock microseconds)."""
        bucket = f"{self._fingerprint}:{endpoint_name}"
        deadline = time.monotonic() + self._timeout_s
        lead_us = int(self._lead_s * 1e6)
        while True:
            try:
                if time.monotonic() >= self._heartbeat_due:
                    self._heartbeat()
                now = _wall_us()
                row, _ = self._execute(f"SELECT next_slot_us, version FROM {self._table} WHERE bucket = ?", (bucket,))
                if row is None:
                    slot = max(now + lead_us, not_before_us)
                    self._execute(
                        f"INSERT INTO {self._table} (bucket, next_slot_us, version) VALUES (?, ?, 1)",
                        (bucket, slot + spacing_us),
                    )
                    swapped = True
                else:
                    slot = max(int(row[0]), now + lead_us, not_before_us)
                    _, count = self._execute(
                        f"UPDATE {self._table} SET next_slot_us = ?, version = version + 1 "
                        "WHERE bucket = ? AND version = ?",
                        (slot + spacing_us, bucket, int(row[1])),
                    )
                    swapped = count == 1
                if swapped:
                    self._db().commit()
                    return slot
                self._rollback()
            except Exception:
                # Lock contention (SQLite's "database is locked"), a lost insert race, or an outage: retry
                # until the deadline, on a fresh connection in case this one is broken.
                self._rollback()
                if time.monotonic() >= deadline:
                    self._drop_connection()
                    raise
                time.sleep(random.uniform(0.001, 0.005))

    def _push(self, endpoint_name: str, until_us: int) -> None:
        bucket = f"{self._fingerprint}:{endpoint_name}"
        try:
            self._execute(
                f"UPDATE {self._table} SET next_slot_us = ?, version = version + 1 WHERE bucket = ? AND next_slot_us < ?",
                (until_us, bucket, until_us),
            )
            self._db().commit()
        except Exception:
            self._rollback()
            raise

    def _ping(self) -> None:
        try:
            self._heartbeat()
        except Exception:
            self._rollback()
            self._drop_connection()
            raise

    def _goodbye(self) -> None:
        try:
            self._execute(f"DELETE FROM {self._table} WHERE bucket = ?", (self._client_bucket(),))
            self._db().commit()
        except Exception:
            self._rollback()
        finally:
            self._drop_connection()

    # -- loop side -----------------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], Any]) -> Any:
        executor = self._executor
        if executor is None:
            raise RuntimeError("the SQL rate limiter is closed")
        return await asyncio.wrap_future(executor.submit(fn))

    def _margin(self, endpoint_name: str) -> float:
        return self._margins.get(endpoint_name, self._margin_s)

    async def _book_and_wait(self, endpoint_name: str) -> float:
        """Book the endpoint's next free slot and sleep until it; return the slot (wall-clock seconds)."""
        shape = self._shapes[endpoint_name]
        # Strict spacing: any `capacity + 1` consecutive starts span a window plus the margin.
        spacing_us = math.ceil((shape.window_s + self._margin(endpoint_name)) / shape.capacity * 1e6)
        not_before_us = int(self._not_before.get(endpoint_name, 0.0) * 1e6)
        began = time.time()
        slot_us = await self._run(functools.partial(self._book, endpoint_name, spacing_us, not_before_us))
        took = time.time() - began
        # Book a little ahead of "now" so the booking's own round trip does not make us late.
        self._lead_s = min(0.1, 0.8 * self._lead_s + 0.2 * (1.5 * took + 0.001))
        slot = slot_us / 1e6
        delay = slot - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return slot

    async def _on_time(self, endpoint_name: str, slot: float) -> float:
        """Return a slot we are on time for: ``slot``, or new ones while we keep being late for them.

        Other processes' slots assume ours goes out at its time; a request more than half the margin late
        would squeeze their window, so it takes a new slot instead (the old one stays unused).
        """
        for _ in range(_SQL_MAX_LATE_REBOOKS):
            if time.time() - slot <= self._margin(endpoint_name) / 2:
                return slot
            slot = await self._book_and_wait(endpoint_name)
        raise TimeoutError(f"the SQL rate-limit backend is too slow: {_SQL_MAX_LATE_REBOOKS} late slots in a row")

    async def _shared_acquire(self, endpoint_name: str) -> Permit | None:
        slot = await self._on_time(endpoint_name, await self._book_and_wait(endpoint_name))
        return _SqlPermit(self, endpoint_name, slot)

    async def _before_send(self, permit: _SqlPermit) -> None:
        """Last check, right before the request's bytes are written (after any connection set-up)."""
        if self._degraded:
            return
        try:
            permit.slot = await self._on_time(permit.endpoint, permit.slot)
        except self._outage_errors as exc:
            self._enter_degraded(exc)
            await self._local_acquire(permit.endpoint)

    async def _probe(self) -> None:
        await self._run(self._ping)

    async def _shared_hold(self, endpoint_name: str, hold_s: float) -> None:
        with self._lock:
            until = time.time() + hold_s
            self._not_before[endpoint_name] = max(self._not_before.get(endpoint_name, 0.0), until)

    async def _shared_throttled(self, endpoint_name: str, retry_after_s: float | None) -> None:
        with self._lock:
            self._margins[endpoint_name] = min(MAX_MARGIN_S * 2, self._margin(endpoint_name) + MARGIN_STEP_S)
        if retry_after_s is not None and retry_after_s > 0:
            await self._run(functools.partial(self._push, endpoint_name, _wall_us() + int(retry_after_s * 1e6)))

    async def aclose(self) -> None:
        """Nothing is bound to an event loop; present for symmetry with :class:`RedisRateLimiter`."""

    def close(self) -> None:
        """Remove this limiter's heartbeat row, close the connection and stop the worker thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        with contextlib.suppress(Exception):
            executor.submit(self._goodbye).result(timeout=self._timeout_s + 1)
        executor.shutdown(wait=False)


def _wall_us() -> int:
    return int(time.time() * 1e6)
