"""SIGKILL attribute syncs that go through v2 bulk jobs, around a submission and while they wait for their jobs.

A job's rows are written down (``submitted``, with the job id) once Attentive has accepted it. Killed before
that, the rows stay ``pending`` and the next run sends them again (upserts are idempotent); killed after, the
next run reconciles the job instead of submitting its rows again. Each test ends with every row ``ok`` and
Attentive holding the model: no row lost, and no row of a recorded job ever in a later submission.
"""

from __future__ import annotations

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
USERS = 20  # per bulk request: 15 jobs
JOBS = ROWS // USERS
SYNC_ID = "crash.bulk"
PK_BY_PHONE = {phone(i): str(i) for i in range(ROWS)}


def config(**options: Any) -> dict[str, Any]:
    return {
        "object": "attributes",
        "sync_id": SYNC_ID,
        "sql": "SELECT customer_id, phone, loyalty_tier, ltv FROM customers",
        "primary_key": "customer_id",
        "options": {
            "bulk": True,
            "bulk_batch_size": USERS,
            "bulk_wait": 20,
            "bulk_poll_interval": 0.05,
            "chunk_size": 100,  # five requests of USERS each
            "lock_wait": 30,
            **options,
        },
        "engine": {"lock_ttl_s": LOCK_TTL_S},
    }


def submissions(launcher: Launcher) -> list[list[str]]:
    """The primary keys each bulk request carried, in order of arrival (the access check carries none)."""
    out = []
    for request in launcher.client.requests(endpoint="bulk"):
        users = (request.get("body") or {}).get("users") or []
        if users:
            out.append([PK_BY_PHONE[u["identifiers"]["phone"]] for u in users])
    return out


def assert_ends_as_the_model(launcher: Launcher, warehouse: Warehouse) -> None:
    """A last run, with jobs completing again, leaves every row ok and Attentive holding the model."""
    client = launcher.client
    finish_jobs(launcher)
    final = launcher.complete(config())
    assert_accounted(final)
    assert final["awaiting_results"] == 0 and final["bulk_jobs_pending"] == 0, final
    assert dict(warehouse.statuses(SYNC_ID)) == {"ok": ROWS}
    held = client.attributes()
    model = {
        phone(i): (tier, ltv)
        for i, tier, ltv in warehouse.query("SELECT customer_id, loyalty_tier, ltv FROM customers")
    }
    assert {p: (held[p]["loyalty_tier"], held[p]["ltv"]) for p in model if p in held} == model, "a row was lost"
    assert warehouse.query(
        "SELECT COUNT(*) FROM attentive_sync_jobs WHERE status NOT IN ('COMPLETED', 'FAILED', 'EXPIRED')"
    ) == [(0,)]
    again = launcher.complete(config())
    assert again["requests"] == 0 and again["unchanged"] == ROWS
    for run in launcher.runs:
        assert_no_secrets(run.output, list(PK_BY_PHONE))


@pytest.fixture
def model(warehouse: Warehouse) -> Warehouse:
    create_customers(warehouse, ROWS)
    return warehouse


CASE = BulkCrashCase(
    sync_id=SYNC_ID,
    rows=ROWS,
    per_request=USERS,
    endpoint="bulk",
    rate_limit="rate_limit_bulk",
    config=config,
    submissions=submissions,
    ends_as_the_model=assert_ends_as_the_model,
)


def test_killed_after_attentive_accepted_a_job_but_before_it_was_recorded_its_rows_are_resent(
    launcher: Launcher, model: Warehouse, request: pytest.FixtureRequest
) -> None:
    """The kill lands between Attentive's 202 and the run writing the job down: its rows are pending, resent."""

    def every_row_changes(k: int) -> set[str]:
        model.execute("UPDATE customers SET loyalty_tier = ?", (f"tier-{k}",))
        return {str(i) for i in range(ROWS)}

    kill_before_a_job_is_recorded(CASE, launcher, model, rng_for(request), every_row_changes)


def test_killed_after_jobs_were_recorded_the_next_run_reconciles_them_without_resubmitting(
    launcher: Launcher, model: Warehouse, request: pytest.FixtureRequest
) -> None:
    kill_after_jobs_were_recorded(CASE, launcher, model, rng_for(request))


def test_killed_while_waiting_for_its_jobs_or_reading_their_results_no_row_is_lost_or_resubmitted(
    launcher: Launcher, model: Warehouse, request: pytest.FixtureRequest
) -> None:
    kill_while_waiting_for_jobs(CASE, launcher, model, rng_for(request))
