"""JSON replies in Attentive's shapes: a payload, or ``{"error": {"id", "message"}}``."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable
from typing import Any

from .framing import Reply

__all__ = ["ErrorReplies", "dumps", "json_reply"]


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(obj, separators=(",", ":")).encode()


def json_reply(obj: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    return Reply(status, dumps(obj), "application/json", headers)


class ErrorReplies:
    """Builds error replies, each with its own id (one sequence per server)."""

    def __init__(self) -> None:
        # Monotonic-ish ids make it easy to correlate an error body with the request log.
        self._ids = itertools.count(int(time.time() * 1000) % 10**9)

    def __call__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Reply:
        return json_reply({"error": {"id": next(self._ids), "message": message}}, status, headers)
