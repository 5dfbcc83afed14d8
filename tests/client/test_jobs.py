"""JobStatus: Attentive's job status answer read defensively; nothing malformed is ever "finished"."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_attentive.client.jobs import JobStatus

JOB = "550e8400-e29b-41d4-a716-446655440000"
LINK = "https://results.example.test/j.jsonl?X-Amz-Signature=abc123"


def test_a_completed_answer() -> None:
    status = JobStatus.from_answer(JOB, {"bulkJobId": JOB, "status": "COMPLETED", "totalRecords": 3, "url": LINK})
    assert status == JobStatus(JOB, "COMPLETED", 3, LINK)
    assert status.finished and status.completed and status.reason is None


def test_failed_is_finished_but_not_completed() -> None:
    status = JobStatus.from_answer(JOB, {"status": "FAILED"})
    assert status.finished and not status.completed and status.url is None


@pytest.mark.parametrize("value", ["PENDING", "IN_PROGRESS", "QUEUED", "CANCELLED", "SOMETHING_NEW"])
def test_any_other_status_is_not_finished(value: str) -> None:
    status = JobStatus.from_answer(JOB, {"bulkJobId": JOB, "status": value, "totalRecords": 1})
    assert status.status == value and not status.finished and status.reason is None


def test_status_spelling_is_normalised() -> None:
    assert JobStatus.from_answer(JOB, {"status": " completed\n"}).finished


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "not a JSON object (NoneType)"),
        ("COMPLETED", "not a JSON object (str)"),
        (["COMPLETED"], "not a JSON object (list)"),
        ({}, "has no status"),
        ({"status": None}, "has no status"),
        ({"status": ""}, "has an unreadable status (str)"),
        ({"status": "   "}, "has an unreadable status (str)"),
        ({"status": True}, "has an unreadable status (bool)"),
        ({"status": 200}, "has an unreadable status (int)"),
        ({"status": ["COMPLETED"]}, "has an unreadable status (list)"),
        ({"status": {"value": "COMPLETED"}}, "has an unreadable status (dict)"),
        ({"bulkJobId": "another-job", "status": "COMPLETED"}, "about job 'another-job'"),
        ({"bulkJobId": 7, "status": "COMPLETED"}, "about job '7'"),
    ],
)
def test_a_malformed_answer_is_not_finished_and_says_why(body: Any, reason: str) -> None:
    status = JobStatus.from_answer(JOB, body)
    assert not status.finished and not status.completed
    assert status.status is None and status.reason is not None and reason in status.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), ("12", 12), (3.0, 3), (None, None), (-1, None), (True, None), ("many", None), ("²", None), (2.5, None)],
)
def test_total_records_of_an_odd_type_is_dropped_not_fatal(value: Any, expected: int | None) -> None:
    status = JobStatus.from_answer(JOB, {"status": "COMPLETED", "totalRecords": value})
    assert status.total_records == expected and status.finished


@pytest.mark.parametrize("value", [None, "", "  ", 5, ["https://x"], {"href": "https://x"}])
def test_a_missing_or_odd_link_is_none(value: Any) -> None:
    status = JobStatus.from_answer(JOB, {"status": "COMPLETED", "url": value})
    assert status.url is None and status.finished


def test_a_huge_status_is_cut() -> None:
    status = JobStatus.from_answer(JOB, {"status": "X" * 10_000})
    assert status.status is not None and len(status.status) == 100 and not status.finished


def test_the_link_stays_out_of_repr_and_events() -> None:
    status = JobStatus.from_answer(JOB, {"status": "COMPLETED", "totalRecords": 2, "url": LINK})
    assert "abc123" not in repr(status)
    event = status.to_event()
    assert event == {
        "id": JOB,
        "status": "COMPLETED",
        "finished": True,
        "total_records": 2,
        "results_available": True,
        "reason": None,
    }
    assert "abc123" not in str(event)


def test_unknown() -> None:
    status = JobStatus.unknown(JOB, "not polled yet")
    assert not status.finished and status.to_event()["reason"] == "not polled yet"
