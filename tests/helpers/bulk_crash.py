"""Seeded-kill scenarios shared by every sync that sends v2 bulk jobs (custom attributes, segment members).

A job's rows are written down (``submitted``, with the job id) once Attentive has accepted it. Killed before
that, the rows stay ``pending`` and the next run sends them again; killed after, the next run reconciles the job
instead of sending its rows again. A :class:`BulkCrashCase` says what differs between syncs (the config, which
requests carry the rows, how the end state is checked); the three scenarios below are the same for all of them.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.helpers.crash import Launcher, Run
from tests.helpers.warehouse import Warehouse

__all__ = [
    "BulkCrashCase",
    "finish_jobs",
    "kill_after_jobs_were_recorded",
    "kill_before_a_job_is_recorded",
    "kill_while_waiting_for_jobs",
    "killed",
]


@dataclass
class BulkCrashCase:
    """What one kind of bulk sync brings to the scenarios.

    :param sync_id: the sync's id in the state tables.
    :param rows: rows of the whole model.
    :param per_request: rows per bulk request.
    :param endpoint: the emulator's name of the endpoint the rows are submitted to (faults are set on it).
    :param rate_limit: the connection extra that paces that endpoint (``rate_limit_bulk``...).
    :param config: the runner config, with operator options overridden by keyword.
    :param submissions: the primary keys each submission carried, in order of arrival.
    :param ends_as_the_model: a last run, with jobs completing again, leaves every row ok and Attentive holding
        the model (it asserts so).
    """

    sync_id: str
    rows: int
    per_request: int
    endpoint: str
    rate_limit: str
    config: Callable[..., dict[str, Any]]
    submissions: Callable[[Launcher], list[list[str]]]
    ends_as_the_model: Callable[[Launcher, Warehouse], None]

    @property
    def jobs(self) -> int:
        return self.rows // self.per_request

    def recorded(self, warehouse: Warehouse) -> dict[str, str]:
        """Rows written down as carried by a job: ``{pk: job_id}``."""
        rows = warehouse.query(
            "SELECT pk, job_id FROM attentive_sync_state WHERE sync_id = ? AND status = 'submitted'", (self.sync_id,)
        )
        return {str(pk): str(job_id) for pk, job_id in rows}

    def recorded_jobs(self, warehouse: Warehouse) -> set[str]:
        rows = warehouse.query("SELECT job_id FROM attentive_sync_jobs WHERE sync_id = ?", (self.sync_id,))
        return {str(r[0]) for r in rows}

    def pending(self, warehouse: Warehouse) -> set[str]:
        return {pk for pk, row in warehouse.state(self.sync_id).items() if row["status"] == "pending"}

    def carried(self, launcher: Launcher, since: int = 0) -> list[str]:
        return [pk for batch in self.submissions(launcher)[since:] for pk in batch]


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


def kill_before_a_job_is_recorded(
    case: BulkCrashCase,
    launcher: Launcher,
    warehouse: Warehouse,
    rng: random.Random,
    next_round: Callable[[int], set[str]],
) -> None:
    """Three rounds: ``next_round(k)`` changes the model and returns the rows that must go out; the kill lands
    between Attentive's 202 for a seeded n-th job and the run writing that job down."""
    client = launcher.client
    for k in range(3):
        finish_jobs(launcher)
        expected = next_round(k)
        # Slow answers on the bulk endpoint: the run is frozen while the n-th request still waits for its own.
        client.set_faults(latency_ms=300, endpoints=[case.endpoint])
        before = len(case.submissions(launcher))
        known = {job["id"] for job in client.jobs()}
        n = rng.randint(1, len(expected) // case.per_request - 1)

        def nth_arrived(n: int = n, before: int = before) -> bool:
            return len(case.submissions(launcher)) - before >= n

        def freeze_until_accepted(run: Run) -> None:
            # Frozen before the n-th job's 202 reaches it, the run never reads that answer. (Nor does this read
            # the warehouse meanwhile: the run may be frozen holding SQLite's lock.)
            run.freeze()
            at_freeze = len(client.jobs())
            deadline = time.monotonic() + 10
            while len(client.jobs()) == at_freeze:
                assert time.monotonic() < deadline, "Attentive never accepted the job"
                time.sleep(0.005)

        killed(launcher.kill_when(case.config(), nth_arrived, then=freeze_until_accepted))
        lost = {job["id"] for job in client.jobs()} - known - case.recorded_jobs(warehouse)
        assert lost, "no job was accepted without being recorded"
        pending = case.pending(warehouse)
        assert len(pending) >= case.per_request, "the rows of a job Attentive accepted, unrecorded, are not pending"
        waiting = case.recorded(warehouse)
        assert not pending & set(waiting)

        # The next run settles the pending rows and sends them again, in new jobs; recorded rows are not sent.
        client.set_faults()
        client.set_job_settings(hold=True)  # open until the next round, which finds them recorded
        seen = len(case.submissions(launcher))
        launcher.complete(case.config(bulk_wait=0))
        resent = Counter(case.carried(launcher, seen))
        assert pending <= set(resent), "a pending row was not sent again"
        assert not set(resent) & set(waiting), "a row of a recorded job was submitted again"
        assert max(resent.values()) == 1
        assert set(resent) | set(waiting) == expected, "a row was neither recorded nor sent"

    seen = len(case.submissions(launcher))
    case.ends_as_the_model(launcher, warehouse)
    assert case.submissions(launcher)[seen:] == [], "a recorded job's rows were submitted again after it completed"


def kill_after_jobs_were_recorded(
    case: BulkCrashCase,
    launcher: Launcher,
    warehouse: Warehouse,
    rng: random.Random,
    after_kill: Callable[[], None] = lambda: None,
) -> None:
    """Three kills once a seeded number of jobs more are recorded (``after_kill`` checks more after each); then
    a last run reconciles every job and submits none of their rows again."""
    launcher.client.set_job_settings(hold=True)  # recorded jobs stay open across the kills
    launcher.set_connection(**{case.rate_limit: 10})  # paced, so the run is still submitting when the kill lands
    ever: set[str] = set()  # rows recorded at some kill
    pending: set[str] = set()  # rows a kill left pending: in flight, or accepted by Attentive and not yet recorded
    for _ in range(3):
        seen = len(case.submissions(launcher))
        target = len(case.recorded_jobs(warehouse)) + rng.randint(1, 4)

        def enough_recorded(target: int = target) -> bool:
            return len(case.recorded_jobs(warehouse)) >= target

        killed(launcher.kill_when(case.config(), enough_recorded, pause=rng.uniform(0, 0.02)))
        assert not set(case.carried(launcher, seen)) & ever, "a row recorded by an earlier run was submitted again"
        now = set(case.recorded(warehouse))
        assert now >= ever, "a recorded row lost its job before the job ended"
        ever |= now
        pending |= case.pending(warehouse)
        after_kill()

    launcher.set_connection()
    seen = len(case.submissions(launcher))
    case.ends_as_the_model(launcher, warehouse)
    assert not set(case.carried(launcher, seen)) & ever, "the last run submitted rows of a recorded job"
    carriers = Counter(case.carried(launcher))
    assert set(carriers) == {str(i) for i in range(case.rows)}
    assert {pk for pk, n in carriers.items() if n > 1} <= pending, "a row went out twice, yet no kill left it pending"


def kill_while_waiting_for_jobs(
    case: BulkCrashCase, launcher: Launcher, warehouse: Warehouse, rng: random.Random
) -> None:
    """Killed while polling its jobs, while reading their results, and while reconciling: no row lost, none
    submitted twice."""
    client = launcher.client
    client.set_job_settings(hold=True)

    def polls() -> int:
        return len(client.requests(endpoint="bulk_job"))

    def statuses_settled_or_waiting() -> None:
        statuses = warehouse.statuses(case.sync_id)
        assert set(statuses) <= {"ok", "submitted"} and sum(statuses.values()) == case.rows, statuses

    # Every job recorded and the run polling them: killed there, its rows wait for their jobs.
    base = polls()
    target = rng.randint(1, 3) * case.jobs
    killed(launcher.kill_when(case.config(), lambda: polls() - base >= target, pause=rng.uniform(0, 0.05)))
    assert dict(warehouse.statuses(case.sync_id)) == {"submitted": case.rows}
    assert len(case.recorded_jobs(warehouse)) == case.jobs == len(client.jobs())

    # Half the jobs released; the next run is killed as it starts reading their results.
    client.release_jobs(rng.sample([job["id"] for job in client.jobs()], case.jobs // 2))
    downloads = len(client.results_downloads())
    killed(launcher.kill_when(case.config(), lambda: len(client.results_downloads()) > downloads, then=Run.freeze))
    statuses_settled_or_waiting()

    # The rest released; killed at a seeded point while reconciling (or not at all, if it was quicker).
    client.release_jobs()
    base = polls()
    target = rng.randint(1, case.jobs)
    launcher.kill_when(case.config(), lambda: polls() - base >= target, pause=rng.uniform(0, 0.05))
    statuses_settled_or_waiting()

    assert len(case.submissions(launcher)) == case.jobs
    case.ends_as_the_model(launcher, warehouse)
    assert len(case.submissions(launcher)) == case.jobs, "a job's rows were submitted again"
    assert len(client.jobs()) == case.jobs
