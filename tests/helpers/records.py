"""What the emulator received and what it holds: the evidence tests check a sync against.

Each function takes the emulator (in-process or its own process) or its client.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from airflow_provider_attentive.emulator import Emulator, EmulatorProcess
from airflow_provider_attentive.emulator.client import EmulatorClient
from airflow_provider_attentive.emulator.schemas import get_request_validator

__all__ = (
    "EmulatorLike",
    "accepted",
    "accepted_event_ids",
    "bodies",
    "request_count",
    "stored_event_ids",
    "subscribed_phones",
)

EmulatorLike = Emulator | EmulatorProcess | EmulatorClient


def _client(emu: EmulatorLike) -> EmulatorClient:
    return emu if isinstance(emu, EmulatorClient) else emu.client


def request_count(emu: EmulatorLike, endpoint: str) -> int:
    """Requests that arrived on ``endpoint`` and were not turned away by its rate limit.

    A 429 is applied to nothing and the transport sends the request again, so counting it would count one send
    twice on a loaded machine (where a window's edge is easier to cross); refusals of any other kind count.
    """
    stats = _client(emu).stats()["endpoints"][endpoint]
    return int(stats["requests"]) - int(stats["rate_limited"])


def bodies(emu: EmulatorLike, endpoint: str) -> list[dict[str, Any]]:
    """Request bodies the emulator received on ``endpoint``, each checked against Attentive's v1 schema."""
    validator = get_request_validator()
    out = []
    for req in _client(emu).requests(endpoint=endpoint):
        body = req["body"]
        if req.get("method", "POST") == "POST":
            problem = validator.validate(endpoint, body)
            assert problem is None, f"{endpoint} body does not match Attentive's v1 schema: {problem}"
        out.append(body)
    return out


def accepted(emu: EmulatorLike, endpoint: str) -> list[dict[str, Any]]:
    """Requests Attentive applied (2xx), including those whose answer was then lost (drop_after_apply)."""
    return [r for r in _client(emu).requests(endpoint=endpoint) if r.get("status") in (200, 202)]


def accepted_event_ids(emu: EmulatorLike) -> Counter[str]:
    """How many times each ``externalEventId`` was applied."""
    return Counter(r["body"]["externalEventId"] for r in accepted(emu, "events"))


def stored_event_ids(emu: EmulatorLike) -> Counter[str]:
    """How many events the emulator holds per ``externalEventId`` (it keeps duplicates, as Attentive may)."""
    return Counter(e["body"]["externalEventId"] for e in _client(emu).events())


def subscribed_phones(emu: EmulatorLike, stype: str = "MARKETING") -> set[str]:
    """Identities currently subscribed to ``stype``."""
    return {ident for ident, subs in _client(emu).subscriptions().items() if subs.get(stype, {}).get("subscribed")}
