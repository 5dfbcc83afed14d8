"""SIGKILL segment mirrors around a member job's submission and while they wait for their jobs.

A member job's rows are written down (``submitted``, with the job id) once Attentive has accepted it. Killed
before that, the rows stay pending and the next run sends them again (adding or removing a member twice changes
nothing); killed after, the next run reconciles the job instead of sending its members again. Each test ends
with every row ``ok``, the segment holding exactly the model, and nobody texted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.helpers.bulk_crash import (
    BulkCrashCase,
    finish_jobs,
    kill_after_jobs_were_recorded,
    kill_before_a_job_is_recorded,
    kill_while_waiting_for_jobs,
)
from tests.helpers.crash import LOCK_TTL_S, Launcher, assert_accounted, assert_no_secrets, rng_for
from tests.helpers.phones import phone
from tests.helpers.warehouse import Warehouse, create_customers

pytestmark = pytest.mark.slow

ROWS = 300
MEMBERS = 20  # per member request: 15 jobs for the whole model
JOBS = ROWS // MEMBERS
SYNC_ID = "crash.segments"
SEGMENT = "crash_vip"
ADD, REMOVE = "segment_members_add", "segment_members_remove"
PK_BY_PHONE = {phone(i): str(i) for i in range(ROWS)}


def config(**options: Any) -> dict[str, Any]:
    return {
        "object": "segments",
        "mode": "mirror",
        "sync_id": SYNC_ID,
        "sql": "SELECT customer_id, phone, email FROM customers",
        "primary_key": "customer_id",
        "options": {
            "segment_external_id": SEGMENT,
            "segment_name": "Crash VIP",
            "member_batch_size": MEMBERS,
            "bulk_wait": 20,
            "bulk_poll_interval": 0.05,
            "chunk_size": 100,  # five requests of MEMBERS each
            "lock_wait": 30,
            **options,
        },
        "engine": {"lock_ttl_s": LOCK_TTL_S},
    }


def submissions(launcher: Launcher, endpoint: str = ADD) -> list[list[str]]:
    """The primary keys each member request on ``endpoint`` carried, in order of arrival."""
    return [
        [PK_BY_PHONE[m["phone"]] for m in (request.get("body") or {}).get("members") or []]
        for request in launcher.client.requests(endpoint=endpoint)
    ]


def segment_members(launcher: Launcher) -> set[str]:
    return set(launcher.client.segments()[SEGMENT]["members"])


def model_phones(warehouse: Warehouse) -> set[str]:
    return {str(p) for (p,) in warehouse.query("SELECT phone FROM customers")}


def assert_ends_as_the_model(launcher: Launcher, warehouse: Warehouse, *, leave: int = 0) -> None:
    """A last run, with jobs completing again, leaves every row ok and the segment holding exactly the model;
    then ``leave`` people leave the model and the next run removes exactly them."""
    client = launcher.client
    finish_jobs(launcher)
    final = launcher.complete(config())
    assert_accounted(final, ops=("added", "changed"))
    assert final["awaiting_results"] == 0 and final["bulk_jobs_pending"] == 0, final
    rows = len(model_phones(warehouse))
    assert dict(warehouse.statuses(SYNC_ID)) == {"ok": rows}
    assert segment_members(launcher) == model_phones(warehouse), "the segment is not the model"
    assert warehouse.query(
        "SELECT COUNT(*) FROM attentive_sync_jobs WHERE status NOT IN ('COMPLETED', 'FAILED', 'EXPIRED')"
    ) == [(0,)]
    if leave:
        warehouse.execute("DELETE FROM customers WHERE customer_id < ?", (leave,))
        removed = launcher.complete(config())
        assert removed["removed"] == leave and removed["succeeded"]["removed"] == leave, removed
        assert segment_members(launcher) == model_phones(warehouse)
    again = launcher.complete(config())
    assert again["planned"] == {"added": 0, "changed": 0, "removed": 0, "retired": 0}, again
    assert again["bulk_jobs_submitted"] == 0
    assert client.messages() == [], "a segment sync texted someone"
    for endpoint in ("subscribe", "unsubscribe", "bulk"):
        assert client.requests(endpoint=endpoint) == [], f"a segment sync called {endpoint}"
    for run in launcher.runs:
        assert_no_secrets(run.output, list(PK_BY_PHONE))


@pytest.fixture
def model(warehouse: Warehouse) -> Warehouse:
    create_customers(warehouse, ROWS)
    return warehouse


CASE = BulkCrashCase(
    sync_id=SYNC_ID,
    rows=ROWS,
    per_request=MEMBERS,
    endpoint=ADD,
    rate_limit="rate_limit_segment_members_add",
    config=config,
    submissions=submissions,
    ends_as_the_model=assert_ends_as_the_model,
)


def test_killed_after_attentive_accepted_a_member_job_but_before_it_was_recorded_its_rows_are_resent(
    launcher: Launcher, warehouse: Warehouse, request: pytest.FixtureRequest
) -> None:
    """Each round, 100 people join the model; the kill lands between Attentive's 202 and the job's record."""
    create_customers(warehouse, 0)

    def hundred_join(k: int) -> set[str]:
        joining = range(k * 100, (k + 1) * 100)
        warehouse.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, 'gold', 0)",
            [(i, phone(i), f"user{i}@example.com") for i in joining],
        )
        return {str(i) for i in joining}

    kill_before_a_job_is_recorded(CASE, launcher, warehouse, rng_for(request), hundred_join)


def test_killed_after_member_jobs_were_recorded_the_next_run_reconciles_them_without_resubmitting(
    launcher: Launcher, model: Warehouse, request: pytest.FixtureRequest
) -> None:
    def nobody_removed_while_adds_are_open() -> None:
        assert launcher.client.requests(endpoint=REMOVE) == [], "a mirror removed someone while its adds were open"

    case = dataclasses.replace(
        CASE, ends_as_the_model=lambda launcher, warehouse: assert_ends_as_the_model(launcher, warehouse, leave=MEMBERS)
    )
    kill_after_jobs_were_recorded(case, launcher, model, rng_for(request), nobody_removed_while_adds_are_open)
    assert sorted(pk for batch in submissions(launcher, REMOVE) for pk in batch) == sorted(map(str, range(MEMBERS)))


def test_killed_while_waiting_for_member_jobs_or_reading_their_results_no_row_is_lost_or_resubmitted(
    launcher: Launcher, model: Warehouse, request: pytest.FixtureRequest
) -> None:
    kill_while_waiting_for_jobs(CASE, launcher, model, rng_for(request))
    assert launcher.client.requests(endpoint=REMOVE) == []
