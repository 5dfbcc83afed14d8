"""Route tables of the emulated API: one :class:`Route` per endpoint, looked up by path and method.

A route carries everything the request pipeline needs to know about an endpoint (scope, the
rate Attentive documents, whether it takes a JSON body) next to the handler that applies it, so
a new endpoint is one table entry plus its handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs

from .keys import KeySpec

if TYPE_CHECKING:
    from .state import EmulatorState

__all__ = ["ApiCall", "Body", "Handler", "Route", "RouteTable"]

#: Whether an endpoint reads a JSON body: not at all, when sent, or always (OpenAPI ``required: true``).
Body = Literal["none", "optional", "required"]


@dataclass(slots=True)
class ApiCall:
    """What a handler sees of an admitted request: the caller's key, the query and the parsed body."""

    spec: KeySpec
    query: str
    body: Any
    received_at: float

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name`` (blank values kept), or None when absent."""
        values = parse_qs(self.query, keep_blank_values=True).get(name)
        return values[0] if values else None


#: Applies one call to the emulated state; returns (HTTP status, JSON payload or None for no body).
Handler = Callable[["EmulatorState", ApiCall], tuple[int, Any]]


@dataclass(frozen=True)
class Route:
    """One emulated endpoint: its name (the key of limits, faults and stats), method, path and handler."""

    name: str
    method: str
    path: str
    #: OAuth scope required; None lets any valid key call it.
    scope: str | None
    #: Requests per second per key that Attentive documents for the endpoint.
    rate_limit: int
    handler: Handler
    body: Body = "none"


class RouteTable:
    """Routes by name and by (path, method); the API prefixes (``/v1``) are derived from the paths."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.by_name: dict[str, Route] = {}
        self._by_path: dict[str, dict[str, Route]] = {}
        for route in routes:
            if route.name in self.by_name:
                raise ValueError(f"duplicate endpoint name {route.name!r}")
            methods = self._by_path.setdefault(route.path, {})
            if route.method in methods:
                raise ValueError(f"duplicate route {route.method} {route.path}")
            self.by_name[route.name] = methods[route.method] = route
        self.names: tuple[str, ...] = tuple(self.by_name)
        self.prefixes: tuple[str, ...] = tuple(dict.fromkeys("/" + path.split("/")[1] for path in self._by_path))

    def prefix_of(self, path: str) -> str | None:
        """The API prefix ``path`` lives under (``"/v1"``), or None when it is outside every API."""
        for prefix in self.prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return prefix
        return None

    def methods(self, path: str) -> dict[str, Route]:
        """Method -> route for ``path`` (empty when no endpoint lives there)."""
        return self._by_path.get(path, {})
