"""SIGKILL segment mirrors around a member job's submission and while they wait for their jobs.

A member job's rows are written down (``submitted``, with the job id) once Attentive has accepted it. Killed
before that, the rows stay pending and the next run sends them again (adding or removing a member twice changes
nothing); killed after, the next run reconciles the job instead of sending its members again. Each test ends
with every row ``ok``, the segment holding exactly the model, and nobody texted.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.crash.test_bulk_kill import finish_jobs, killed
from tests.helpers.crash import LOCK_TTL_S, Launcher, Run, assert_accounted, assert_no_secrets, rng_for
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


def recorded(warehouse: Warehouse) -> dict[str, str]:
    """Rows written down as carried by a job: ``{pk: job_id}``."""
    rows = warehouse.query(
        "SELECT pk, job_id FROM attentive_sync_state WHERE sync_id = ? AND status = 'submitted'", (SYNC_ID,)
    )
    return {str(pk): str(job_id) for pk, job_id in rows}


def recorded_jobs(warehouse: Warehouse) -> set[str]:
    return {str(r[0]) for r in warehouse.query("SELECT job_id FROM attentive_sync_jobs WHERE sync_id = ?", (SYNC_ID,))}


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


# ------------------------------------------------------------------------------ before the record ----


def test_killed_after_attentive_accepted_a_member_job_but_before_it_was_recorded_its_rows_are_resent(
    launcher: Launcher, warehouse: Warehouse, request: pytest.FixtureRequest
) -> None:
    """Each round, 100 people join the model; the kill lands between Attentive's 202 and the job's record."""
    rng = rng_for(request)
    client = launcher.client
    create_customers(warehouse, 0)
    for k in range(3):
        finish_jobs(launcher)
        joining = range(k * 100, (k + 1) * 100)
        warehouse.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, 'gold', 0)",
            [(i, phone(i), f"user{i}@example.com") for i in joining],
        )
        # Slow answers on the member endpoint: the run is frozen while the n-th request still waits for its own.
        client.set_faults(latency_ms=300, endpoints=[ADD])
        before = len(submissions(launcher))
        known = {job["id"] for job in client.jobs()}
        n = rng.randint(1, 4)

        def nth_arrived(n: int = n, before: int = before) -> bool:
            return len(submissions(launcher)) - before >= n

        def freeze_until_accepted(run: Run) -> None:
            # Frozen before the n-th job's 202 reaches it, the run never reads that answer (nor is the warehouse
            # read meanwhile: the run may be frozen holding SQLite's lock).
            run.freeze()
            at_freeze = len(client.jobs())
            deadline = time.monotonic() + 10
            while len(client.jobs()) == at_freeze:
                assert time.monotonic() < deadline, "Attentive never accepted the job"
                time.sleep(0.005)

        killed(launcher.kill_when(config(), nth_arrived, then=freeze_until_accepted))
        lost = {job["id"] for job in client.jobs()} - known - recorded_jobs(warehouse)
        assert lost, "no job was accepted without being recorded"
        state = warehouse.state(SYNC_ID)
        pending = {pk for pk, row in state.items() if row["status"] == "pending"}
        assert len(pending) >= MEMBERS, "the rows of a job Attentive accepted, unrecorded, are not pending"
        waiting = recorded(warehouse)
        assert not pending & set(waiting)

        # The next run settles the pending rows and sends them again; rows of recorded jobs are not sent.
        client.set_faults()
        client.set_job_settings(hold=True)  # open until the next round, which finds them recorded
        seen = len(submissions(launcher))
        launcher.complete(config(bulk_wait=0))
        resent = Counter(pk for batch in submissions(launcher)[seen:] for pk in batch)
        assert pending <= set(resent), "a pending row was not sent again"
        assert not set(resent) & set(waiting), "a row of a recorded job was submitted again"
        assert max(resent.values()) == 1
        assert set(resent) | set(waiting) == {str(i) for i in joining}, "a row was neither recorded nor sent"

    seen = len(submissions(launcher))
    assert_ends_as_the_model(launcher, warehouse)
    assert submissions(launcher)[seen:] == [], "a recorded job's rows were submitted again after it completed"


# ------------------------------------------------------------------------------- after the record ----


def test_killed_after_member_jobs_were_recorded_the_next_run_reconciles_them_without_resubmitting(
    launcher: Launcher, model: Warehouse, request: pytest.FixtureRequest
) -> None:
    rng = rng_for(request)
    client = launcher.client
    client.set_job_settings(hold=True)  # recorded jobs stay open across the kills
    launcher.set_connection(rate_limit_segment_members_add=10)  # paced: still submitting when the kill lands
    ever: set[str] = set()  # rows recorded at some kill
    pending: set[str] = set()  # rows a kill left pending: in flight, or accepted and not yet recorded
    for _ in range(3):
        seen = len(submissions(launcher))
        target = len(recorded_jobs(model)) + rng.randint(1, 4)

        def enough_recorded(target: int = target) -> bool:
            return len(recorded_jobs(model)) >= target

        killed(launcher.kill_when(config(), enough_recorded, pause=rng.uniform(0, 0.02)))
        since = {pk for batch in submissions(launcher)[seen:] for pk in batch}
        assert not since & ever, "a row recorded by an earlier run was submitted again"
        now = set(recorded(model))
        assert now >= ever, "a recorded row lost its job before the job ended"
        ever |= now
        pending |= {pk for pk, row in model.state(SYNC_ID).items() if row["status"] == "pending"}
        assert client.requests(endpoint=REMOVE) == [], "a mirror removed someone while its adds were open"

    launcher.set_connection()
    seen = len(submissions(launcher))
    assert_ends_as_the_model(launcher, model, leave=MEMBERS)
    resent = {pk for batch in submissions(launcher)[seen:] for pk in batch}
    assert not resent & ever, "the last run submitted rows of a recorded job"
    carriers = Counter(pk for batch in submissions(launcher) for pk in batch)
    assert set(carriers) == {str(i) for i in range(ROWS)}
    assert {pk for pk, n in carriers.items() if n > 1} <= pending, "a row went out twice, yet no kill left it pending"
    assert sorted(pk for batch in submissions(launcher, REMOVE) for pk in batch) == sorted(map(str, range(MEMBERS)))


# ----------------------------------------------------------------------------------- while waiting ----


def test_killed_while_waiting_for_member_jobs_or_reading_their_results_no_row_is_lost_or_resubmitted(
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
    killed(launcher.kill_when(config(), lambda: len(client.results_downloads()) > downloads, then=Run.freeze))
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
    assert len(client.jobs()) == JOBS and client.requests(endpoint=REMOVE) == []
