"""The Attentive endpoints this provider calls, with their scopes and published rate limits.

``ENDPOINTS`` is the table everything else reads (the transport, the rate limiters, the hook's rate-limit
extras): adding an endpoint is a member of :class:`EndpointName` plus one row there.
"""

from __future__ import annotations

import enum
import re
import urllib.parse
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
    BULK = "bulk"
    BULK_JOB = "bulk_job"
    SEGMENT_MEMBERS_ADD = "segment_members_add"
    SEGMENT_MEMBERS_REMOVE = "segment_members_remove"
    SEGMENT_CREATE = "segment_create"
    SEGMENT_READ = "segment_read"
    SEGMENT_UPDATE = "segment_update"
    SEGMENT_ARCHIVE = "segment_archive"
    SEGMENTS_LIST = "segments_list"

    def __str__(self) -> str:
        # A str-mixin enum would print as "EndpointName.ME" (Python 3.11+); messages and keys want "me".
        return self.value


@dataclass(frozen=True)
class Endpoint:
    """One Attentive REST operation.

    ``path`` may hold ``{name}`` parameters, filled by :meth:`resolve_path`. ``scope`` is the OAuth scope
    Attentive requires (a tuple when it requires several, ``None`` when none). ``default_rate`` is
    Attentive's published per-key limit in requests per second. ``idempotent`` says whether sending the
    same request twice is harmless; the retry policy refuses to resend a non-idempotent request that may
    already have reached Attentive.
    """

    name: EndpointName
    method: str
    path: str
    scope: str | tuple[str, ...] | None
    default_rate: float
    idempotent: bool
    #: Attentive texts the person when this is applied again (subscribe, unsubscribe): an answer that does not
    #: say it was refused (a 5xx) leaves it in doubt instead of being retried
    notifies_on_repeat: bool = False

    @property
    def scopes(self) -> tuple[str, ...]:
        """Every scope the endpoint requires (empty when none)."""
        if self.scope is None:
            return ()
        return (self.scope,) if isinstance(self.scope, str) else self.scope

    @property
    def path_params(self) -> tuple[str, ...]:
        """The names of the ``{...}`` parameters in ``path``, in order."""
        return tuple(_PATH_PARAM.findall(self.path))

    def resolve_path(self, path_params: Mapping[str, str] | None = None) -> str:
        """``path`` with each ``{name}`` replaced by its URL-quoted value from ``path_params``.

        Raises ``ValueError`` before anything is sent when a parameter is missing, empty, unknown or a dot
        segment: an empty segment or ``..`` would address another resource (``/v2/segments/external/`` is
        not the segment, and a client normalising ``..`` would climb out of it).
        """
        given = dict(path_params or {})
        names = self.path_params
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"{self.method} {self.path} has no path parameter {', '.join(map(repr, unknown))}")
        path = self.path
        for name in names:
            value = given.get(name)
            if value is None or not str(value):
                raise ValueError(f"{self.method} {self.path} needs the path parameter {name!r}")
            text = str(value)
            if text in (".", ".."):
                raise ValueError(f"{self.method} {self.path}: path parameter {name!r} cannot be {text!r}")
            # safe="" quotes "/" too, so a value stays one path segment.
            path = path.replace("{" + name + "}", urllib.parse.quote(text, safe=""))
        return path


_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BULK_SCOPES = ("attributes:write", "subscriptions:write")


_TABLE = (
    Endpoint(EndpointName.ME, "GET", "/v1/me", None, 150.0, True),
    Endpoint(EndpointName.ATTRIBUTES, "POST", "/v1/attributes/custom", "attributes:write", 150.0, True),
    # Every event carries a stable externalEventId, but Attentive does not document deduplicating by it,
    # and a repeated event can trigger a journey twice: one that may have been applied is in doubt, not resent.
    Endpoint(EndpointName.EVENTS, "POST", "/v1/events/custom", "events:write", 150.0, False),
    # Attentive texts the person again on a repeated subscribe/unsubscribe, so a resend is not harmless.
    Endpoint(EndpointName.SUBSCRIBE, "POST", "/v1/subscriptions", "subscriptions:write", 10.0, False, True),
    Endpoint(
        EndpointName.UNSUBSCRIBE, "POST", "/v1/subscriptions/unsubscribe", "subscriptions:write", 5.0, False, True
    ),
    Endpoint(EndpointName.SUBSCRIPTIONS_READ, "GET", "/v1/subscriptions", "subscriptions:read", 150.0, True),
    Endpoint(EndpointName.IDENTITY, "POST", "/v1/identity-resolution/user-identifiers", "identity:write", 10.0, True),
    # v2 bulk jobs and segments (100 requests/s each). A bulk job is an upsert of the same users and a
    # membership change is a set operation, so sending one twice ends in the same state.
    Endpoint(EndpointName.BULK, "POST", "/v2/bulk/user/attributes", _BULK_SCOPES, 100.0, True),
    Endpoint(EndpointName.BULK_JOB, "GET", "/v2/bulk/job/{bulkJobId}", None, 100.0, True),
    Endpoint(EndpointName.SEGMENT_MEMBERS_ADD, "POST", "/v2/bulk/segments/members", "segments:write", 100.0, True),
    Endpoint(EndpointName.SEGMENT_MEMBERS_REMOVE, "DELETE", "/v2/bulk/segments/members", "segments:write", 100.0, True),
    # Creating a segment twice could leave two segments (an externalId is optional), so it is not resent.
    Endpoint(EndpointName.SEGMENT_CREATE, "POST", "/v2/segments", "segments:write", 100.0, False),
    Endpoint(EndpointName.SEGMENT_READ, "GET", "/v2/segments/external/{externalId}", "segments:read", 100.0, True),
    Endpoint(EndpointName.SEGMENT_UPDATE, "PATCH", "/v2/segments/external/{externalId}", "segments:write", 100.0, True),
    Endpoint(
        EndpointName.SEGMENT_ARCHIVE, "DELETE", "/v2/segments/external/{externalId}", "segments:write", 100.0, True
    ),
    Endpoint(EndpointName.SEGMENTS_LIST, "GET", "/v2/segments", "segments:read", 100.0, True),
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
