"""AttentiveBulkJobTrigger: its serialized form, and run() against the emulator, with no secret in its event."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from typing import Any

import pytest

from airflow_provider_attentive.client import AttentiveTransport, LimiterRegistry, TransportConfig
from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.get_provider_info import get_provider_info
from airflow_provider_attentive.triggers.bulk_job import AttentiveBulkJobTrigger
from tests.helpers.stub_server import StubReply, StubServer

KEY = "test-key"
USERS = [{"identifiers": {"phone": "+14155550177"}, "attributes": {"custom": {"tier": "gold"}}}]


def set_conn(monkeypatch: pytest.MonkeyPatch, url: str, key: str = KEY, conn_id: str = "attentive_default") -> None:
    conn = {"conn_type": "attentive", "host": url, "password": key}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def submit(url: str, n: int = 1) -> list[str]:
    with AttentiveTransport(TransportConfig(url, KEY), registry=LimiterRegistry()) as transport:
        results = [transport.request("bulk", {"users": USERS}) for _ in range(n)]
    assert all(r.status == 202 for r in results), [r.error for r in results]
    return [r.body["batchJobId"] for r in results]


def fire(trigger: AttentiveBulkJobTrigger) -> list[dict[str, Any]]:
    """Every event ``run()`` yields (it must yield exactly one)."""

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


# -- serialization -------------------------------------------------------------------------------------------


def test_serialize_round_trips() -> None:
    trigger = AttentiveBulkJobTrigger(
        attentive_conn_id="attentive_v2", job_ids=["j1", "j2", "j1"], deadline=1_900_000_000, poll_interval=30
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_attentive.triggers.bulk_job.AttentiveBulkJobTrigger"
    assert kwargs == {
        "attentive_conn_id": "attentive_v2",
        "job_ids": ["j1", "j2"],
        "deadline": 1_900_000_000.0,
        "poll_interval": 30.0,
    }
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)


def test_airflow_serializes_the_kwargs() -> None:
    from airflow.serialization.serialized_objects import BaseSerialization

    _, kwargs = AttentiveBulkJobTrigger(job_ids=["j1"], deadline=1_900_000_000.5).serialize()
    assert BaseSerialization.deserialize(BaseSerialization.serialize(kwargs)) == kwargs


@pytest.mark.parametrize(
    "kwargs",
    [
        {"job_ids": [], "deadline": 1.0},
        {"job_ids": "j1", "deadline": 1.0},
        {"job_ids": ["j1", ""], "deadline": 1.0},
        {"job_ids": [7], "deadline": 1.0},
        {"job_ids": ["j1"], "deadline": float("nan")},
        {"job_ids": ["j1"], "deadline": "tomorrow"},
        {"job_ids": ["j1"], "deadline": 1.0, "poll_interval": 0},
        {"job_ids": ["j1"], "deadline": 1.0, "poll_interval": True},
    ],
)
def test_bad_arguments_are_refused_when_deferring(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AttentiveBulkJobTrigger(**kwargs)


def test_the_trigger_is_registered_with_the_provider() -> None:
    (entry,) = get_provider_info()["triggers"]
    assert entry["python-modules"] == ["airflow_provider_attentive.triggers.bulk_job"]
    for module in entry["python-modules"]:
        importlib.import_module(module)


# -- run() ---------------------------------------------------------------------------------------------------


def test_done_when_every_job_finished(monkeypatch: pytest.MonkeyPatch, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_job_settings(pending_s=0.05, delay_s=0.3)
    set_conn(monkeypatch, attentive_emulator.url)
    ids = submit(attentive_emulator.url, 2)
    (event,) = fire(AttentiveBulkJobTrigger(job_ids=ids, deadline=time.time() + 30, poll_interval=0.1))
    assert event["status"] == "done"
    assert event["message"] == "2 bulk job(s): 2 completed, 0 failed"
    assert list(event["jobs"]) == ids
    for job_id, job in event["jobs"].items():
        assert job == {
            "id": job_id,
            "status": "COMPLETED",
            "finished": True,
            "total_records": 1,
            "results_available": True,
            "reason": None,
        }
    text = json.dumps(event)
    assert KEY not in text and "signature" not in text.lower() and "http" not in text


def test_a_failed_job_is_done_too(monkeypatch: pytest.MonkeyPatch, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_job_settings(pending_s=0.0, delay_s=0.05, fail_rate=1.0)
    set_conn(monkeypatch, attentive_emulator.url)
    ids = submit(attentive_emulator.url)
    (event,) = fire(AttentiveBulkJobTrigger(job_ids=ids, deadline=time.time() + 30, poll_interval=0.1))
    assert event["status"] == "done" and event["jobs"][ids[0]]["status"] == "FAILED"
    assert event["message"] == "1 bulk job(s): 0 completed, 1 failed"


def test_timeout_when_the_deadline_passes(monkeypatch: pytest.MonkeyPatch, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_job_settings(pending_s=0.0, hold=True)
    set_conn(monkeypatch, attentive_emulator.url)
    ids = submit(attentive_emulator.url)
    (event,) = fire(AttentiveBulkJobTrigger(job_ids=ids, deadline=time.time() + 0.4, poll_interval=0.1))
    assert event["status"] == "timeout"
    assert event["jobs"][ids[0]]["status"] == "IN_PROGRESS" and not event["jobs"][ids[0]]["finished"]
    assert event["message"] == "1 bulk job(s): 0 completed, 0 failed, 1 not finished by the deadline"


def test_error_when_the_key_is_rejected(monkeypatch: pytest.MonkeyPatch, attentive_emulator: Emulator) -> None:
    set_conn(monkeypatch, attentive_emulator.url, key="sk_revoked_4417")
    (event,) = fire(AttentiveBulkJobTrigger(job_ids=["j1"], deadline=time.time() + 30, poll_interval=0.1))
    assert event["status"] == "error" and "HTTP 401" in event["message"]
    assert event["jobs"]["j1"]["finished"] is False
    assert "sk_revoked_4417" not in json.dumps(event)


def test_error_when_the_connection_is_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_ATTENTIVE_BROKEN",
        json.dumps({"conn_type": "attentive", "host": "http://attentive.example.test", "password": "sk_broken_77"}),
    )
    trigger = AttentiveBulkJobTrigger(attentive_conn_id="attentive_broken", job_ids=["j1"], deadline=time.time() + 5)
    (event,) = fire(trigger)
    assert event["status"] == "error" and "refusing plain http://" in event["message"]
    assert event["jobs"] == {
        "j1": {
            "id": "j1",
            "status": None,
            "finished": False,
            "total_records": None,
            "results_available": False,
            "reason": "not polled",
        }
    }
    assert "sk_broken_77" not in json.dumps(event)


def test_error_when_the_connection_is_missing() -> None:
    trigger = AttentiveBulkJobTrigger(attentive_conn_id="nope_not_defined", job_ids=["j1"], deadline=time.time() + 5)
    (event,) = fire(trigger)
    assert event["status"] == "error" and "nope_not_defined" in event["message"]


def test_an_echoed_key_never_reaches_the_event(monkeypatch: pytest.MonkeyPatch, stub_server: StubServer) -> None:
    set_conn(monkeypatch, stub_server.url, key="sk_echoed_2024")
    stub_server.script(StubReply(403, {"error": "Bearer sk_echoed_2024 may not read jobs"}))
    (event,) = fire(AttentiveBulkJobTrigger(job_ids=["j1"], deadline=time.time() + 5, poll_interval=0.1))
    assert event["status"] == "error" and "refused access" in event["message"]
    assert "sk_echoed_2024" not in json.dumps(event)
