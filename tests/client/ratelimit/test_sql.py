"""The shared rate budget in a SQL table: SQLite and PostgreSQL, late slots, an unreachable database."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.client.ratelimit import sql
from airflow_provider_attentive.client.ratelimit.shared import RateLimitBackendUnavailable, budget_fingerprint
from airflow_provider_attentive.client.ratelimit.sql import SqlRateLimiter
from tests.helpers.limits import max_in_window, run_limiters
from tests.helpers.postgres import pg_connect

BASE = "https://api.example"
KEY = "sk_live_shared_budget_7f3a9c"


def sqlite_limiter(path: Path, rates: dict[str, float], **kwargs: Any) -> SqlRateLimiter:
    return SqlRateLimiter(
        lambda: sqlite3.connect(path, timeout=5), base_url=BASE, api_key=KEY, rates=rates, placeholder="?", **kwargs
    )


def test_two_sql_limiters_never_exceed_the_limit(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    limiters = [sqlite_limiter(db, {"subscribe": 10}) for _ in range(2)]
    try:
        starts = run_limiters(limiters, "subscribe", 12)
        assert limiters[0].peers >= 1 and limiters[1].peers == 2
    finally:
        for limiter in limiters:
            limiter.close()
    assert max_in_window(starts) <= 10
    rows = sqlite3.connect(db).execute("SELECT bucket FROM attentive_rate_limit").fetchall()
    assert rows == [(f"{budget_fingerprint(BASE, KEY)}:subscribe",)]  # heartbeats removed on close
    assert KEY not in repr(rows)


def test_a_sql_slot_missed_before_sending_is_replaced(tmp_path: Path) -> None:
    limiter = sqlite_limiter(tmp_path / "state.db", {"subscribe": 10})

    async def main() -> tuple[float, float, float]:
        permit = await limiter.acquire("subscribe")
        assert isinstance(permit, sql._SqlPermit)
        first = permit.slot
        await permit.before_send()  # on time: keeps its slot
        assert permit.slot == first
        permit.slot -= 0.2  # as if the request were about to go out 200 ms after its slot
        await permit.before_send()
        return first, permit.slot, time.time()

    try:
        first, replaced, now = asyncio.run(main())
    finally:
        limiter.close()
    assert replaced > first
    assert abs(now - replaced) <= 0.025 + 0.01  # on time for the new slot


@pytest.mark.postgres
def test_sql_limiter_on_postgres(pg_database: dict[str, Any]) -> None:
    limiters = [
        SqlRateLimiter(
            lambda: pg_connect(pg_database), base_url=BASE, api_key=KEY, rates={"unsubscribe": 5}, placeholder="%s"
        )
        for _ in range(2)
    ]
    try:
        starts = run_limiters(limiters, "unsubscribe", 6)
    finally:
        for limiter in limiters:
            limiter.close()
    assert max_in_window(starts) <= 5


def test_unreachable_sql_backend_at_start_is_a_clear_error() -> None:
    def connect() -> Any:
        raise OSError("could not connect to server: Connection refused")

    with pytest.raises(RateLimitBackendUnavailable, match=r"rate_limit_backend 'sql'.*Connection refused"):
        SqlRateLimiter(connect, base_url=BASE, api_key=KEY, rates={"subscribe": 10}, description="connection 'x'")
