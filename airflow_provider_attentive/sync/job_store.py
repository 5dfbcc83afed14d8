"""Bulk jobs in the state store: which job carries which rows, recorded before anything waits on it.

``<prefix>sync_jobs`` holds one row per submitted job (sync, job id, endpoint, rows, submitted, status, last
checked). The rows of a job are the state rows whose ``status`` is ``submitted`` and whose ``job_id`` is the
job's: written in the same transaction as the job, once Attentive has answered 202. A crash before that
leaves the rows ``pending`` (settled and resent: the upserts are idempotent); after it, the next run reconciles
the job instead of submitting the rows again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from airflow_provider_attentive.sync.state import StateRow, StateStore, utcnow

__all__ = ["CLOSED_STATUSES", "JobRecord", "JobStore"]

#: job statuses after which the job's rows have their outcomes (EXPIRED: older than the results' retention)
CLOSED_STATUSES = ("COMPLETED", "FAILED", "EXPIRED")


@dataclass(frozen=True)
class JobRecord:
    """One submitted job as the state store knows it."""

    job_id: str
    endpoint: str
    rows: int
    submitted_at: str
    status: str

    def age(self, now: dt.datetime | None = None) -> dt.timedelta:
        """How long ago the job was submitted."""
        submitted = dt.datetime.strptime(self.submitted_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
        return (now or dt.datetime.now(dt.timezone.utc)) - submitted


class JobStore:
    """Reads and writes the jobs table beside a :class:`StateStore` (same connection, same prefix)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.table = state.table_name("sync_jobs")

    def ensure_table(self) -> None:
        """Create the jobs table on first use."""
        created = self.state.create_table(
            self.table,
            f"""CREATE TABLE {self.table} (
                sync_id VARCHAR(250) NOT NULL,
                job_id VARCHAR(100) NOT NULL,
                endpoint VARCHAR(64),
                row_count INTEGER,
                submitted_at VARCHAR(32),
                status VARCHAR(32),
                checked_at VARCHAR(32),
                message VARCHAR(1000),
                PRIMARY KEY (sync_id, job_id)
            )""",
        )
        if not created:
            return
        # Reconciling reads each job's rows by job id: without this, every job scans the sync's waiting rows.
        try:
            self.state._execute(
                f"CREATE INDEX {self.state.prefix}sync_state_job ON {self.state.state_table} (sync_id, job_id)"
            )
            self.state.conn.commit()
        except Exception:  # an optimisation only: a database that refuses it still works, just slower
            self.state.conn.rollback()

    def exists(self) -> bool:
        return self.state._exists(self.table)

    def record(self, sync_id: str, job_id: str, endpoint: str, rows: Sequence[tuple[str, str]]) -> None:
        """Record a job Attentive accepted and mark its rows ``submitted``, in one transaction.

        ``rows`` are ``(key, identity)``: the identifiers each row was submitted under (JSON), which the job's
        results echo and are matched on.
        """
        p = self.state.p
        now = utcnow()
        try:
            self.state._execute(
                f"INSERT INTO {self.table} (sync_id, job_id, endpoint, row_count, submitted_at, status, checked_at) "
                f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
                (sync_id, job_id, endpoint, len(rows), now, "SUBMITTED", now),
            )
            self.state._executemany(
                f"UPDATE {self.state.state_table} SET status = {p}, job_id = {p}, identity = {p}, updated_at = {p} "
                f"WHERE sync_id = {p} AND pk = {p}",
                [("submitted", job_id, identity, now, sync_id, key) for key, identity in rows],
            )
            self.state.conn.commit()
        except Exception:
            self.state.conn.rollback()
            raise

    def open_jobs(self, sync_id: str) -> list[JobRecord]:
        """Jobs whose rows still wait for their outcome, oldest first."""
        marks = ", ".join([self.state.p] * len(CLOSED_STATUSES))
        sql = (
            f"SELECT job_id, endpoint, row_count, submitted_at, status FROM {self.table} "
            f"WHERE sync_id = {self.state.p} AND status NOT IN ({marks}) ORDER BY submitted_at"
        )
        return [
            JobRecord(str(r[0]), str(r[1] or ""), int(r[2] or 0), str(r[3]), str(r[4] or ""))
            for r in self.state._query(sql, (sync_id, *CLOSED_STATUSES))
        ]

    def rows(self, sync_id: str, job_id: str) -> list[StateRow]:
        """The state rows a job carries that still wait for it."""
        p = self.state.p
        sql = (
            "SELECT pk, row_hash, attempt_hash, status, op, member, identity, run_id "
            f"FROM {self.state.state_table} WHERE sync_id = {p} AND job_id = {p} AND status = {p}"
        )
        return [StateRow(*row) for row in self.state._query(sql, (sync_id, job_id, "submitted"))]

    def update(self, sync_id: str, job_id: str, status: str, message: str | None = None) -> None:
        """Note a job's last known status (a closed status once its rows have their outcomes)."""
        p = self.state.p
        self.state._execute(
            f"UPDATE {self.table} SET status = {p}, checked_at = {p}, message = {p} WHERE sync_id = {p} AND job_id = {p}",
            (status[:32], utcnow(), (message or None) and message[:1000], sync_id, job_id),
        )
        self.state.conn.commit()
