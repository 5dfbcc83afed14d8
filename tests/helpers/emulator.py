"""Constants and checks shared by the emulator tests (an emulator error body's documented shape, v2 jobs)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from airflow_provider_attentive.emulator import Emulator

__all__ = ["EMAIL", "PHONE", "error_message", "finished_job", "release_and_finish", "v2_client"]

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


def release_and_finish(emu: Emulator, timeout: float = 10.0) -> None:
    """Let held jobs go and wait until each has finished, as the trigger would before firing."""
    emu.client.release_jobs()
    emu.client.set_job_settings()  # jobs submitted from now on complete on their own
    deadline = time.monotonic() + timeout
    while any(job["status"] not in ("COMPLETED", "FAILED") for job in emu.client.jobs()):
        assert time.monotonic() < deadline, "released jobs did not finish"
        time.sleep(0.05)
