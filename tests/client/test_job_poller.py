"""poll_jobs: waits for bulk jobs on an asyncio loop until they finish, the deadline passes, or the key is refused."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_attentive.client import AttentiveTransport, LimiterRegistry, TransportConfig
from airflow_provider_attentive.client.job_poller import JobPollError, PollOutcome, poll_jobs
from airflow_provider_attentive.client.results import download_results
from airflow_provider_attentive.emulator import Emulator
from tests.helpers.stub_server import StubReply, StubServer

KEY = "test-key"
USERS = [{"identifiers": {"phone": "+14155550111"}, "attributes": {"custom": {"tier": "gold"}}}]


def poll(config: TransportConfig, job_ids: list[str], *, interval_s: float = 0.05, within: float = 5.0) -> PollOutcome:
    return asyncio.run(
        poll_jobs(config, job_ids, interval_s=interval_s, deadline=time.time() + within, registry=LimiterRegistry())
    )


def submit(url: str, n: int = 1) -> list[str]:
    with AttentiveTransport(TransportConfig(url, KEY), registry=LimiterRegistry()) as transport:
        results = [transport.request("bulk", {"users": USERS}) for _ in range(n)]
    assert all(r.status == 202 for r in results), [r.error for r in results]
    return [r.body["batchJobId"] for r in results]


def test_it_returns_when_every_job_is_finished(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_job_settings(pending_s=0.05, delay_s=0.3)
    ids = submit(attentive_emulator.url, 2)
    outcome = poll(TransportConfig(attentive_emulator.url, KEY), ids)
    assert outcome.finished
    assert list(outcome.jobs) == ids
    assert all(s.completed and s.total_records == 1 and s.url for s in outcome.jobs.values())
    polls = [r for r in attentive_emulator.client.requests() if r["path"].startswith("/v2/bulk/job/")]
    assert len(polls) >= 4  # not finished at the first round

    # The link it returns downloads without the API key.
    lines = list(download_results(outcome.jobs[ids[0]].url or ""))
    assert len(lines) == 1
    hits = attentive_emulator.client.results_downloads()
    assert hits and not any(hit["authorization"] for hit in hits)


def test_the_deadline_ends_the_wait_with_the_last_statuses(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_job_settings(pending_s=0.0, hold=True)
    ids = submit(attentive_emulator.url)
    started = time.monotonic()
    outcome = poll(TransportConfig(attentive_emulator.url, KEY), ids, interval_s=0.1, within=0.5)
    assert 0.4 < time.monotonic() - started < 3
    assert not outcome.finished
    (status,) = outcome.jobs.values()
    assert status.status == "IN_PROGRESS" and status.reason is None and not status.finished


def test_a_deadline_already_past_still_polls_once(stub_server: StubServer) -> None:
    stub_server.script(StubReply(200, {"bulkJobId": "j1", "status": "COMPLETED", "totalRecords": 1}))
    outcome = poll(TransportConfig(stub_server.url, KEY), ["j1"], within=-60)
    assert outcome.finished and len(stub_server.requests) == 1


def test_a_rejected_key_ends_it_with_an_error(attentive_emulator: Emulator) -> None:
    with pytest.raises(JobPollError, match="rejected the API key \\(HTTP 401\\)") as info:
        poll(TransportConfig(attentive_emulator.url, "sk_revoked_key_9911"), ["j1", "j2"])
    assert info.value.status == 401
    assert set(info.value.jobs) == {"j1", "j2"}
    assert "sk_revoked_key_9911" not in str(info.value)


def test_a_403_ends_it_with_an_error(stub_server: StubServer) -> None:
    stub_server.script(StubReply(403, {"error": "forbidden"}))
    with pytest.raises(JobPollError, match="refused access") as info:
        poll(TransportConfig(stub_server.url, KEY), ["j1"])
    assert info.value.status == 403 and len(stub_server.requests) == 1


def test_transient_errors_are_retried_at_the_next_interval(stub_server: StubServer) -> None:
    stub_server.script(
        StubReply(200, {"bulkJobId": "j1", "status": "IN_PROGRESS"}),
        StubReply(500, "oops"),
        StubReply(429, {"error": "slow down"}),
        StubReply(200, "not json"),
        StubReply(200, {"bulkJobId": "j1", "status": "COMPLETED", "totalRecords": 4}),
    )
    outcome = poll(TransportConfig(stub_server.url, "sk_poller_5"), ["j1"])
    assert outcome.finished and outcome.jobs["j1"].total_records == 4
    assert len(stub_server.requests) == 5
    first = stub_server.requests[0]
    assert (first.method, first.path) == ("GET", "/v2/bulk/job/j1")
    assert first.headers["Authorization"] == "Bearer sk_poller_5"
    assert first.headers["User-Agent"].startswith("airflow-provider-attentive/")


def test_a_failed_poll_keeps_the_last_readable_status(stub_server: StubServer) -> None:
    stub_server.script(StubReply(200, {"bulkJobId": "j1", "status": "IN_PROGRESS"}), StubReply(503, "down"))
    outcome = poll(TransportConfig(stub_server.url, KEY), ["j1"], interval_s=0.05, within=0.3)
    assert outcome.jobs["j1"].status == "IN_PROGRESS" and outcome.jobs["j1"].reason is None


def test_an_unreachable_server_is_retried_until_the_deadline(closed_port_url: str) -> None:
    outcome = poll(TransportConfig(closed_port_url, KEY), ["j1"], interval_s=0.05, within=0.3)
    assert not outcome.finished
    reason = outcome.jobs["j1"].reason or ""
    assert "ConnectError" in reason and KEY not in reason


def test_malformed_answers_never_finish_a_job(stub_server: StubServer) -> None:
    stub_server.script(StubReply(200, {"bulkJobId": "another", "status": "COMPLETED"}))
    outcome = poll(TransportConfig(stub_server.url, KEY), ["j1"], within=0.2)
    assert not outcome.finished and "about job 'another'" in (outcome.jobs["j1"].reason or "")


def test_requests_keep_to_rate_limit_bulk_job(stub_server: StubServer) -> None:
    stub_server.script(StubReply(200, {"status": "COMPLETED"}))
    ids = [f"j{i}" for i in range(6)]
    outcome = poll(TransportConfig(stub_server.url, KEY, rate_limits={"bulk_job": 2}), ids, within=10)
    assert outcome.finished
    arrivals = sorted(r.at for r in stub_server.requests)
    assert len(arrivals) == 6
    for i in range(len(arrivals) - 2):
        assert arrivals[i + 2] - arrivals[i] >= 0.95, "more than 2 requests in one second"


@pytest.mark.parametrize(
    ("job_ids", "error"),
    [([], ValueError), (["ok", ""], ValueError), ("j1", TypeError), ([None], ValueError)],
)
def test_bad_job_ids_are_refused(job_ids: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        poll(TransportConfig("https://api.example.test", KEY), job_ids)
