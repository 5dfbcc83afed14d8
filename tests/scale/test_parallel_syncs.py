"""Three sync processes at once on one Attentive key share one rate budget through Redis.

The setup users outgrow one process with: several syncs on one API key, each in its own worker process. Each
process runs a real attributes operator (1,500 rows, 150 requests/s limit) and a real subscriptions operator (50
subscribes, 10/s) side by side, with the connection extra ``rate_limit_backend = "redis"``. Redis is Debian's
``redis-server`` started here on a free loopback port; the emulator runs in its own process and counts every
arrival. Without the shared budget each process would send at the full limit (3x too fast); with it the
emulator must never see more than the limit in any one-second window, refuse at most 1% of requests (in practice
none), and every row must be delivered.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, EmulatorProcess, KeySpec
from tests.helpers.phones import phone
from tests.helpers.records import subscribed_phones
from tests.helpers.redis import RedisServer, require_redis_server
from tests.helpers.scale import ParallelRun, run_parallel_syncs

pytestmark = pytest.mark.slow

API_KEY = "scale-test-key-2b81f0"
PROCESSES = 3
ATTRIBUTES_ROWS = 1500
SUBSCRIBE_ROWS = 50
LIMITS = {"attributes": 150, "subscribe": 10}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = require_redis_server()
    yield server
    server.close()


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with Emulator.spawn(keys={API_KEY: KeySpec(scopes=ALL_SCOPES, company_name="Scale Co")}) as proc:
        proc.client.reset()
        # Some latency, as from a real API: requests overlap, so the limiter, not the round trip, sets the pace.
        proc.client.set_faults(latency_ms=30, jitter_ms=10, seed=7)
        yield proc


@pytest.fixture(scope="module")
def shared_run(
    emulator: EmulatorProcess, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> ParallelRun:
    extra = {
        "rate_limit_backend": "redis",
        "rate_limit_redis_url": redis_server.url,
        "timeout": 10,
        "max_concurrency": 32,
    }
    return run_parallel_syncs(
        emulator,
        API_KEY,
        tmp_path_factory.mktemp("parallel-syncs"),
        extra=extra,
        processes=PROCESSES,
        attributes_rows=ATTRIBUTES_ROWS,
        subscribe_rows=SUBSCRIBE_ROWS,
        timeout_s=120,
    )


def test_every_process_finished_and_delivered_every_row(shared_run: ParallelRun) -> None:
    assert shared_run.returncodes == [0] * PROCESSES, "\n".join(log[-3000:] for log in shared_run.logs)
    jobs = shared_run.summaries()
    assert len(jobs) == 2 * PROCESSES
    for job in jobs:
        assert "error" not in job, job
        summary = job["summary"]
        expected = ATTRIBUTES_ROWS if job["sync_id"].startswith("scale.attributes") else SUBSCRIBE_ROWS
        assert sum(summary["succeeded"].values()) == expected, summary
        assert not sum(summary["failed"].values()), summary
    # The syncs overlapped: every process was sending at the same time as the others.
    attribute_jobs = [j for j in jobs if j["sync_id"].startswith("scale.attributes")]
    assert max(j["started"] for j in attribute_jobs) < min(j["finished"] for j in attribute_jobs)


def test_emulator_holds_every_row(shared_run: ParallelRun, emulator: EmulatorProcess) -> None:
    attributes = emulator.client.attributes()
    expected = {phone(p * 100_000 + i) for p in range(PROCESSES) for i in range(ATTRIBUTES_ROWS)}
    assert expected <= set(attributes)
    assert subscribed_phones(emulator) == {
        phone(p * 100_000 + 50_000 + i) for p in range(PROCESSES) for i in range(SUBSCRIBE_ROWS)
    }


@pytest.mark.parametrize("endpoint", sorted(LIMITS))
def test_the_emulator_never_saw_more_than_the_limit_in_any_second(shared_run: ParallelRun, endpoint: str) -> None:
    stats = shared_run.endpoint(endpoint)
    limit = LIMITS[endpoint]
    assert stats["limit"] == limit
    assert stats["max_window_all"] <= limit, stats
    assert stats["rate_limited"] <= 0.01 * stats["requests"], stats
    # How much of the shared budget they use together is measured by benchmarks/parallel_syncs.py.
