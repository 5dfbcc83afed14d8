"""The Attentive v1 endpoints this provider calls, with their scopes and published rate limits.

Pure Python (no Airflow imports) so the sync engine can use it without Airflow installed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ENDPOINTS", "Endpoint", "get_endpoint"]


@dataclass(frozen=True)
class Endpoint:
    """One Attentive REST operation.

    ``default_rate`` is Attentive's published per-key limit in requests per second. ``idempotent`` says
    whether sending the same request twice is harmless; the retry policy refuses to resend a
    non-idempotent request that may already have reached Attentive.
    """

    name: str
    method: str
    path: str
    scope: str | None
    default_rate: float
    idempotent: bool


ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        Endpoint("me", "GET", "/v1/me", None, 150.0, True),
        Endpoint("attributes", "POST", "/v1/attributes/custom", "attributes:write", 150.0, True),
        # Every event carries a stable externalEventId, but Attentive does not document deduplicating by it,
        # and a repeated event can trigger a journey twice: one that may have been applied is in doubt, not resent.
        Endpoint("events", "POST", "/v1/events/custom", "events:write", 150.0, False),
        # Attentive texts the person again on a repeated subscribe/unsubscribe, so a resend is not harmless.
        Endpoint("subscribe", "POST", "/v1/subscriptions", "subscriptions:write", 10.0, False),
        Endpoint("unsubscribe", "POST", "/v1/subscriptions/unsubscribe", "subscriptions:write", 5.0, False),
        Endpoint("subscriptions_read", "GET", "/v1/subscriptions", "subscriptions:read", 150.0, True),
        Endpoint("identity", "POST", "/v1/identity-resolution/user-identifiers", "identity:write", 10.0, True),
    )
}


def get_endpoint(name: str) -> Endpoint:
    """Return the endpoint called ``name``; the ``KeyError`` lists the valid names."""
    try:
        return ENDPOINTS[name]
    except KeyError:
        raise KeyError(f"unknown Attentive endpoint {name!r}; expected one of {sorted(ENDPOINTS)}") from None
