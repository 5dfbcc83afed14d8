"""Route tables of the emulated API: one :class:`Route` per endpoint, looked up by path and method.

A route carries everything the request pipeline needs to know about an endpoint (scopes, the
rate Attentive documents, whether it takes a JSON body) next to the handler that applies it, so
a new endpoint is one table entry plus its handler. Paths may hold parameters
(``/v2/bulk/job/{bulkJobId}``): the handler finds their values in :attr:`ApiCall.path_params`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote

from .keys import KeySpec

if TYPE_CHECKING:
    from .state import EmulatorState

__all__ = ["ApiCall", "Body", "Handler", "Route", "RouteTable"]

#: Whether an endpoint reads a JSON body: not at all, when sent, or always (OpenAPI ``required: true``).
Body = Literal["none", "optional", "required"]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(slots=True)
class ApiCall:
    """What a handler sees of an admitted request: the caller's key, the query, the parsed body, path values.

    ``key`` is the caller's API key itself: handlers that remember who called (bulk jobs) keep its
    fingerprint and mask (:mod:`.keys`), never the key. ``host`` is the request's Host header.
    """

    spec: KeySpec
    query: str
    body: Any
    received_at: float
    path_params: Mapping[str, str] = field(default_factory=dict)
    key: str = ""
    host: str = ""

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
    #: The path, with ``{name}`` for each path parameter.
    path: str
    #: OAuth scope(s) required, all of them; None lets any valid key call it.
    scope: str | tuple[str, ...] | None
    #: Requests per second per key that Attentive documents for the endpoint.
    rate_limit: int
    handler: Handler
    body: Body = "none"
    #: A beta endpoint: keys without v2 access (``KeySpec.v2_access``) are answered 404, as Attentive does.
    beta: bool = False

    @property
    def scopes(self) -> tuple[str, ...]:
        """Every scope the route requires (empty when any valid key may call it)."""
        if self.scope is None:
            return ()
        return (self.scope,) if isinstance(self.scope, str) else self.scope


class _Template:
    """A path with parameters, matched segment by segment; each value is URL-decoded."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.names = _PARAM.findall(path)
        pattern = "".join(
            "([^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(_PARAM.split(path)) if i % 2 or part
        )
        self._regex = re.compile(pattern)

    def match(self, path: str) -> dict[str, str] | None:
        m = self._regex.fullmatch(path)
        if m is None:
            return None
        return {name: unquote(value) for name, value in zip(self.names, m.groups(), strict=True)}


class RouteTable:
    """Routes by name and by (path, method); the API prefixes (``/v1``, ``/v2``) are derived from the paths.

    A literal path is found by one dict lookup (the v1 hot path); templated paths are tried in table
    order only when no literal path matches.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self.by_name: dict[str, Route] = {}
        by_path: dict[str, dict[str, Route]] = {}
        for route in routes:
            if route.name in self.by_name:
                raise ValueError(f"duplicate endpoint name {route.name!r}")
            methods = by_path.setdefault(route.path, {})
            if route.method in methods:
                raise ValueError(f"duplicate route {route.method} {route.path}")
            self.by_name[route.name] = methods[route.method] = route
        self._literal = {path: methods for path, methods in by_path.items() if not _PARAM.search(path)}
        self._templates = [(_Template(path), methods) for path, methods in by_path.items() if _PARAM.search(path)]
        self.names: tuple[str, ...] = tuple(self.by_name)
        self.prefixes: tuple[str, ...] = tuple(dict.fromkeys("/" + path.split("/")[1] for path in by_path))

    def prefix_of(self, path: str) -> str | None:
        """The API prefix ``path`` lives under (``"/v1"``), or None when it is outside every API."""
        for prefix in self.prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return prefix
        return None

    def match(self, path: str) -> tuple[dict[str, Route], dict[str, str]]:
        """Method -> route for ``path`` (empty when no endpoint lives there), and the path parameters' values."""
        methods = self._literal.get(path)
        if methods is not None:
            return methods, {}
        for template, template_methods in self._templates:
            params = template.match(path)
            if params is not None:
                return template_methods, params
        return {}, {}

    def methods(self, path: str) -> dict[str, Route]:
        """Method -> route for ``path`` (empty when no endpoint lives there)."""
        return self.match(path)[0]
