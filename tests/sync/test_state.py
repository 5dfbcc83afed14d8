"""The state tables themselves: what a run finds in the user's database."""

from __future__ import annotations

import sqlite3

from airflow_provider_attentive.sync.state import StateStore


def test_pending_and_in_doubt_lookups_use_an_index_not_a_scan() -> None:
    conn = sqlite3.connect(":memory:")
    store = StateStore(conn, table_prefix="crm_")
    store.ensure_tables()
    store.ensure_tables()  # a second run finds the tables and leaves them alone
    indexes = [r[1] for r in conn.execute("PRAGMA index_list(crm_sync_state)")]
    assert "crm_sync_state_status" in indexes
    plan = " ".join(
        str(r[-1])
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT pk FROM crm_sync_state WHERE sync_id = ? AND status IN (?)", ("s", "pending")
        )
    )
    assert "USING INDEX crm_sync_state_status" in plan, plan
    assert store.rows_with_status("s", ["pending"]) == []
