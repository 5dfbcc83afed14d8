"""Constants and checks shared by the emulator tests (an emulator error body's documented shape, v2 jobs)."""

from __future__ import annotations

import time
from typing import Any

import httpx

__all__ = ["EMAIL", "PHONE", "error_message", "finished_job", "v2_client"]

PHONE = "+14155550100"
EMAIL = "person@example.com"


def error_message(response: httpx.Response) -> str:
    """The ``error.message`` of an emulator error body (asserting the documented shape)."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"]["id"], int)
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


def v2_client(url: str, key: str = "test-key") -> httpx.Client:
    """A client for ``<url>/v2`` that sends ``key`` as its bearer token."""
    return httpx.Client(base_url=f"{url}/v2", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def finished_job(api: httpx.Client, job_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll ``GET /v2/bulk/job/{job_id}`` until the job is COMPLETED or FAILED; returns that answer."""
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(f"/bulk/job/{job_id}")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["status"] in ("COMPLETED", "FAILED"):
            return status
        assert time.monotonic() < deadline, f"job {job_id} still {status['status']} after {timeout}s"
        time.sleep(0.02)
