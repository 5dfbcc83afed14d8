"""SIGKILL attribute syncs that go through v2 bulk jobs, around a submission and while they wait for their jobs.

A job's rows are written down (``submitted``, with the job id) once Attentive has accepted it. Killed before
that, the rows stay ``pending`` and the next run sends them again (upserts are idempotent); killed after, the
next run reconciles the job instead of submitting its rows again. Each test ends with every row ``ok`` and
Attentive holding the model: no row lost, and no row of a recorded job ever in a later submission.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.helpers.crash import LOCK_TTL_S, Launcher, Run, assert_accounted, assert_no_secrets, rng_for
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


def recorded(warehouse: Warehouse) -> dict[str, str]:
    """Rows written down as carried by a job: ``{pk: job_id}``."""
    rows = warehouse.query(
        "SELECT pk, job_id FROM attentive_sync_state WHERE sync_id = ? AND status = 'submitted'", (SYNC_ID,)
    )
    return {str(pk): str(job_id) for pk, job_id in rows}


def recorded_jobs(warehouse: Warehouse) -> set[str]:
    return {str(r[0]) for r in warehouse.query("SELECT job_id FROM attentive_sync_jobs WHERE sync_id = ?", (SYNC_ID,))}


def killed(run: Run) -> None:
    assert run.killed, f"the run was not killed mid-flight (rc={run.rc}):\n{run.output[-3000:]}"


def finish_jobs(launcher: Launcher, timeout: float = 10.0) -> None:
    """Release held jobs, let new ones complete on their own, and wait until Attentive has finished each."""
    client = launcher.client
    client.release_jobs()
    client.set_job_settings()
    deadline = time.monotonic() + timeout
    while any(job["status"] not in ("COMPLETED", "FAILED") for job in client.jobs()):
        assert time.monotonic() < deadline, "released jobs did not finish"
        time.sleep(0.05)


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


# ------------------------------------------------------------------------------ before the record ----


def test_killed_after_attentive_accepted_a_job_but_before_it_was_recorded_its_rows_are_resent(
    launcher: Launcher, model: Warehouse, request: pytest.FixtureRequest
) -> None:
    """The kill lands between Attentive's 202 and the run writing the job down: its rows are pending, resent."""
    rng = rng_for(request)
    client = launcher.client
    for k in range(3):
        finish_jobs(launcher)
        model.execute("UPDATE customers SET loyalty_tier = ?", (f"tier-{k}",))  # every row goes out again
        # Slow answers on the bulk endpoint: the run is frozen while the n-th request still waits for its own.
        client.set_faults(latency_ms=300, endpoints=["bulk"])
        before = len(submissions(launcher))
        known = {job["id"] for job in client.jobs()}
        n = rng.randint(1, JOBS - 1)

        def nth_arrived(n: int = n, before: int = before) -> bool:
            return len(submissions(launcher)) - before >= n

        def freeze_until_accepted(run: Run) -> None:
            # Frozen before the n-th job's 202 reaches it, the run never reads that answer. (Nor does this read
            # the warehouse meanwhile: the run may be frozen holding SQLite's lock.)
            run.freeze()
            at_freeze = len(client.jobs())
            deadline = time.monotonic() + 10
            while len(client.jobs()) == at_freeze:
                assert time.monotonic() < deadline, "Attentive never accepted the job"
                time.sleep(0.005)

        run = launcher.kill_when(config(), nth_arrived, then=freeze_until_accepted)
        killed(run)
        lost = {job["id"] for job in client.jobs()} - known - recorded_jobs(model)
        assert lost, "no job was accepted without being recorded"
        state = model.state(SYNC_ID)
        pending = {pk for pk, row in state.items() if row["status"] == "pending"}
        assert len(pending) >= USERS, "the rows of a job Attentive accepted, unrecorded, are not pending"
        waiting = recorded(model)
        assert not pending & set(waiting)

        # The next run settles the pending rows and sends them again, in new jobs; recorded rows are not sent.
        client.set_faults()
        client.set_job_settings(hold=True)  # open until the next iteration, which finds them recorded
        seen = len(submissions(launcher))
        launcher.complete(config(bulk_wait=0))
        resent = Counter(pk for batch in submissions(launcher)[seen:] for pk in batch)
        assert pending <= set(resent), "a pending row was not sent again"
        assert not set(resent) & set(waiting), "a row of a recorded job was submitted again"
        assert max(resent.values()) == 1
        assert set(resent) | set(waiting) == {str(i) for i in range(ROWS)}, "a row was neither recorded nor sent"

    seen = len(submissions(launcher))
    assert_ends_as_the_model(launcher, model)
    assert submissions(launcher)[seen:] == [], "a recorded job's rows were submitted again after it completed"


# ------------------------------------------------------------------------------- after the record ----


def test_killed_after_jobs_were_recorded_the_next_run_reconciles_them_without_resubmitting(
    launcher: Launcher, model: Warehouse, request: pytest.FixtureRequest
) -> None:
    rng = rng_for(request)
    client = launcher.client
    client.set_job_settings(hold=True)  # recorded jobs stay open across the kills
    launcher.set_connection(rate_limit_bulk=10)  # paced, so the run is still submitting when the kill lands
    ever: set[str] = set()  # rows recorded at some kill
    pending: set[str] = set()  # rows a kill left pending: in flight, or accepted by Attentive and not yet recorded
    for _ in range(3):
        seen = len(submissions(launcher))
        target = len(recorded_jobs(model)) + rng.randint(1, 4)

        def enough_recorded(target: int = target) -> bool:
            return len(recorded_jobs(model)) >= target

        run = launcher.kill_when(config(), enough_recorded, pause=rng.uniform(0, 0.02))
        killed(run)
        since = {pk for batch in submissions(launcher)[seen:] for pk in batch}
        assert not since & ever, "a row recorded by an earlier run was submitted again"
        now = set(recorded(model))
        assert now >= ever, "a recorded row lost its job before the job ended"
        ever |= now
        pending |= {pk for pk, row in model.state(SYNC_ID).items() if row["status"] == "pending"}

    launcher.set_connection()
    seen = len(submissions(launcher))
    assert_ends_as_the_model(launcher, model)
    resent = {pk for batch in submissions(launcher)[seen:] for pk in batch}
    assert not resent & ever, "the last run submitted rows of a recorded job"
    carriers = Counter(pk for batch in submissions(launcher) for pk in batch)
    assert set(carriers) == {str(i) for i in range(ROWS)}
    assert {pk for pk, n in carriers.items() if n > 1} <= pending, "a row went out twice, yet no kill left it pending"


# ----------------------------------------------------------------------------------- while waiting ----


def test_killed_while_waiting_for_its_jobs_or_reading_their_results_no_row_is_lost_or_resubmitted(
    launcher: Launcher, model: Warehouse, request: pytest.FixtureRequest
) -> None:
    rng = rng_for(request)
    client = launcher.client
    client.set_job_settings(hold=True)

    def polls() -> int:
        return len(client.requests(endpoint="bulk_job"))

    # Every job recorded and the run polling them: killed there, its rows wait for their jobs.
    base = polls()
    target = rng.randint(1, 3) * JOBS
    killed(launcher.kill_when(config(), lambda: polls() - base >= target, pause=rng.uniform(0, 0.05)))
    assert dict(model.statuses(SYNC_ID)) == {"submitted": ROWS}
    assert len(recorded_jobs(model)) == JOBS == len(client.jobs())

    # Half the jobs released; the next run is killed as it starts reading their results.
    client.release_jobs(rng.sample([job["id"] for job in client.jobs()], JOBS // 2))
    downloads = len(client.results_downloads())
    run = launcher.kill_when(config(), lambda: len(client.results_downloads()) > downloads, then=Run.freeze)
    killed(run)
    statuses = model.statuses(SYNC_ID)
    assert set(statuses) <= {"ok", "submitted"} and sum(statuses.values()) == ROWS, statuses

    # The rest released; killed at a seeded point while reconciling (or not at all, if it was quicker).
    client.release_jobs()
    base = polls()
    target = rng.randint(1, JOBS)
    launcher.kill_when(config(), lambda: polls() - base >= target, pause=rng.uniform(0, 0.05))
    statuses = model.statuses(SYNC_ID)
    assert set(statuses) <= {"ok", "submitted"} and sum(statuses.values()) == ROWS, statuses

    assert len(submissions(launcher)) == JOBS
    assert_ends_as_the_model(launcher, model)
    assert len(submissions(launcher)) == JOBS, "a job's rows were submitted again"
    assert len(client.jobs()) == JOBS
