"""The Attentive endpoints this provider calls, with their scopes and published rate limits.

``ENDPOINTS`` is the table everything else reads (the transport, the rate limiters, the hook's rate-limit
extras): adding an endpoint is a member of :class:`EndpointName` plus one row there.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["ENDPOINTS", "Endpoint", "EndpointName", "endpoint_names", "get_endpoint"]


class EndpointName(str, enum.Enum):
    """The name of one Attentive operation: the key of ``ENDPOINTS`` and of per-endpoint rate limits.

    The values are what connection extras (``rate_limit_subscribe``), ``TransportConfig.rate_limits`` and the
    shared rate-limit stores use. ``str(name)`` is the value, so names read the same in messages as before.
    """

    ME = "me"
    ATTRIBUTES = "attributes"
    EVENTS = "events"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    SUBSCRIPTIONS_READ = "subscriptions_read"
    IDENTITY = "identity"

    def __str__(self) -> str:
        # A str-mixin enum would print as "EndpointName.ME" (Python 3.11+); messages and keys want "me".
        return self.value


@dataclass(frozen=True)
class Endpoint:
    """One Attentive REST operation.

    ``default_rate`` is Attentive's published per-key limit in requests per second. ``idempotent`` says
    whether sending the same request twice is harmless; the retry policy refuses to resend a
    non-idempotent request that may already have reached Attentive.
    """

    name: EndpointName
    method: str
    path: str
    scope: str | None
    default_rate: float
    idempotent: bool


_TABLE = (
    Endpoint(EndpointName.ME, "GET", "/v1/me", None, 150.0, True),
    Endpoint(EndpointName.ATTRIBUTES, "POST", "/v1/attributes/custom", "attributes:write", 150.0, True),
    # Every event carries a stable externalEventId, but Attentive does not document deduplicating by it,
    # and a repeated event can trigger a journey twice: one that may have been applied is in doubt, not resent.
    Endpoint(EndpointName.EVENTS, "POST", "/v1/events/custom", "events:write", 150.0, False),
    # Attentive texts the person again on a repeated subscribe/unsubscribe, so a resend is not harmless.
    Endpoint(EndpointName.SUBSCRIBE, "POST", "/v1/subscriptions", "subscriptions:write", 10.0, False),
    Endpoint(EndpointName.UNSUBSCRIBE, "POST", "/v1/subscriptions/unsubscribe", "subscriptions:write", 5.0, False),
    Endpoint(EndpointName.SUBSCRIPTIONS_READ, "GET", "/v1/subscriptions", "subscriptions:read", 150.0, True),
    Endpoint(EndpointName.IDENTITY, "POST", "/v1/identity-resolution/user-identifiers", "identity:write", 10.0, True),
)

ENDPOINTS: Mapping[EndpointName, Endpoint] = MappingProxyType({e.name: e for e in _TABLE})


def endpoint_names() -> list[str]:
    """Every endpoint name as plain text, for error messages."""
    return sorted(name.value for name in EndpointName)


def get_endpoint(name: EndpointName | str) -> Endpoint:
    """The endpoint called ``name`` (an :class:`EndpointName` or its value); the ``KeyError`` lists valid names."""
    try:
        return ENDPOINTS[EndpointName(name)]
    except ValueError:
        raise KeyError(f"unknown Attentive endpoint {name!r}; expected one of {endpoint_names()}") from None
