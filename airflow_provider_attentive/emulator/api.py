"""The request pipeline of the emulated API: fault, key, beta access, scopes, rate limit, body, handler, log.

Routes come from :data:`~.endpoints.API_ROUTES`; this module applies to every one of them what
Attentive applies to every call, in Attentive's order, and records each call for inspection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from .endpoints import API_ROUTES
from .errors import ApiError
from .faults import AFTER_APPLY_KINDS, APPLY_THEN_5XX_STATUS, FaultDecision, FaultInjector
from .framing import ABORT, Reply, Request
from .keys import mask_api_key
from .limits import DEFAULT_LIMIT
from .replies import ErrorReplies, dumps
from .routing import ApiCall, Route, RouteTable
from .schemas import RequestValidator
from .state import EmulatorState

__all__ = ["ApiRoutes"]

log = logging.getLogger("airflow_provider_attentive.emulator")

_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


class ApiRoutes:
    """Answers requests under the API prefixes (``/v1``, ``/v2``) from a route table and the emulated state."""

    def __init__(
        self,
        state: EmulatorState,
        faults: FaultInjector,
        validator: RequestValidator,
        errors: ErrorReplies,
        log_requests: bool = False,
        routes: RouteTable = API_ROUTES,
    ) -> None:
        self.state = state
        self.faults = faults
        self.validator = validator
        self.errors = errors
        self.log_requests = log_requests
        self.routes = routes

    def serves(self, path: str) -> bool:
        """Whether ``path`` lives under one of the API prefixes."""
        return self.routes.prefix_of(path) is not None

    async def handle(self, req: Request) -> Reply:
        state = self.state
        now = time.monotonic()
        received_at = time.time()
        methods, path_params = self.routes.match(req.path)
        route = methods.get(req.method)
        if route is None:
            # Not an endpoint: no key bucket to charge, so report the default limit untouched.
            state.not_found += 1
            rl = _rl_headers(DEFAULT_LIMIT, DEFAULT_LIMIT)
            if methods:
                allow = ("Allow", ", ".join(sorted(methods)))
                return self.errors(405, f"{req.method} is not allowed on {req.path}", (*rl, allow))
            version = (self.routes.prefix_of(req.path) or "/v1")[1:]
            return self.errors(404, f"{req.method} {req.path} is not an emulated Attentive {version} endpoint", rl)
        endpoint = route.name
        decision = self.faults.decide(endpoint)

        stats = state.endpoint_stats[endpoint]
        stats.requests += 1
        stats.arrivals.add(now)
        key = _bearer(req.headers.get("authorization"))
        entry: dict[str, Any] = {
            "endpoint": endpoint,
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "status": None,
            "received_at": received_at,
            "key": mask_api_key(key) if key else None,
            "body": req.body,
        }
        state.request_log.append(entry)

        if decision.kind is not None and decision.kind not in AFTER_APPLY_KINDS:
            # The request never reaches "Attentive": nothing is applied or counted in the limiter.
            return await self._fault(decision, endpoint, key, now, entry)

        # Auth and rate limiting are decided at arrival so injected latency cannot reorder the window.
        limiter = state.limiter
        limit = limiter.limit(endpoint)
        spec = state.keys.get(key) if key else None
        reply: Reply | None = None
        if spec is None:
            rl = _rl_headers(limit, limit)
            msg = "missing bearer token in Authorization header" if not key else "invalid or revoked API key"
            reply = self.errors(401, msg, rl)
        elif route.beta and not spec.v2_access:
            # Attentive's beta endpoints do not exist for a key that was not let in.
            assert key is not None
            rl = _rl_headers(limit, limiter.remaining(key, endpoint, now))
            reply = self.errors(404, f"{req.method} {req.path}: not found (this API key has no v2 access)", rl)
        elif missing := [scope for scope in route.scopes if scope not in spec.scopes]:
            assert key is not None
            rl = _rl_headers(limit, limiter.remaining(key, endpoint, now))
            names = " and ".join(repr(scope) for scope in missing)
            noun = "scope" if len(missing) == 1 else "scopes"
            reply = self.errors(403, f"API key lacks the {names} {noun} required by {req.method} {req.path}", rl)
        else:
            assert key is not None
            accepted, remaining = limiter.acquire(key, endpoint, now)
            rl = _rl_headers(limit, remaining)
            if accepted:
                stats.accepted.add(now)
            else:
                stats.rate_limited += 1
                reply = self.errors(429, f"rate limit of {limit} requests per second exceeded for {endpoint}", rl)

        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if reply is None:
            assert spec is not None and key is not None
            try:
                body = self._json_body(route, req.body)
                call = ApiCall(spec, req.query, body, received_at, path_params, key, req.headers.get("host", ""))
                status, payload = route.handler(state, call)
            except ApiError as exc:
                reply = self.errors(exc.status, exc.message, rl)
            else:
                if payload is None:
                    reply = Reply(status, b"", None, rl)
                else:
                    reply = Reply(status, dumps(payload), "application/json", rl)

        entry["status"] = reply.status
        if decision.kind == "drop_after_apply":
            stats.faults["drop_after_apply"] += 1
            entry["fault"] = "drop_after_apply"
            self._log(entry)
            return ABORT
        if decision.kind == "apply_then_5xx":
            # The log keeps what was applied (``status``); the caller sees only the gateway's answer.
            stats.faults["apply_then_5xx"] += 1
            stats.status[APPLY_THEN_5XX_STATUS] += 1
            entry["fault"] = "apply_then_5xx"
            entry["answered"] = APPLY_THEN_5XX_STATUS
            self._log(entry)
            return self.errors(APPLY_THEN_5XX_STATUS, "injected fault: gateway timeout", rl)
        stats.status[reply.status] += 1
        self._log(entry)
        return reply

    async def _fault(
        self, decision: FaultDecision, endpoint: str, key: str | None, now: float, entry: dict[str, Any]
    ) -> Reply:
        state = self.state
        stats = state.endpoint_stats[endpoint]
        kind = decision.kind
        assert kind is not None
        stats.faults[kind] += 1
        entry["fault"] = kind
        self._log(entry)
        if kind == "hang":
            await asyncio.sleep(self.faults.config.hang_s)
            return ABORT
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if kind == "drop":
            return ABORT
        limit = state.limiter.limit(endpoint)
        remaining = state.limiter.remaining(key, endpoint, now) if key is not None and key in state.keys else limit
        rl = _rl_headers(limit, remaining)
        if kind == "non_json":
            entry["status"] = 502
            stats.status[502] += 1
            return Reply(502, _HTML_502, "text/html", rl)
        entry["status"] = decision.error_status
        stats.status[decision.error_status] += 1
        return self.errors(decision.error_status, "injected fault: upstream service error", rl)

    def _json_body(self, route: Route, raw: bytes) -> Any:
        """The parsed, schema-checked body of a route that reads one; None for the others."""
        if route.body == "none":
            return None
        if not raw.strip():
            if route.body == "required":
                raise ApiError(400, "request body is required (JSON object)")
            raw = b"{}"
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"malformed JSON body: {exc}") from None
        problem = self.validator.validate(route.name, body)
        if problem is not None:
            raise ApiError(400, problem)
        return body

    def _log(self, entry: Mapping[str, Any]) -> None:
        if self.log_requests or log.isEnabledFor(logging.DEBUG):
            log.log(
                logging.INFO if self.log_requests else logging.DEBUG,
                "%s %s -> %s%s key=%s",
                entry["method"],
                entry["path"],
                entry["status"],
                f" fault={entry['fault']}" if entry.get("fault") else "",
                entry["key"],
            )


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _rl_headers(limit: int, remaining: int) -> tuple[tuple[str, str], ...]:
    return (("x-ratelimit-limit", str(limit)), ("x-ratelimit-remaining", str(remaining)))
