"""Constants and checks shared by the emulator tests (an emulator error body's documented shape)."""

from __future__ import annotations

import httpx

__all__ = ["EMAIL", "PHONE", "error_message"]

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
