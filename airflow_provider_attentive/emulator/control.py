"""The ``/_emulator`` control routes: inspect the emulated state and steer keys, limits, faults, jobs and data.

Never subject to faults, keys or rate limits. Each route is one entry of :data:`CONTROL_ROUTES`
(which ``GET /_emulator/`` and ``attentive-emulator --help`` list) plus its handler, which returns
the JSON payload of a 200 answer or raises :class:`~.errors.ApiError`. The one exception is a
bulk job's results file, served as JSON Lines from a pre-signed link (:mod:`.jobs`).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from .endpoints import API_ROUTES, ENDPOINT_NAMES
from .errors import ApiError
from .faults import FaultConfig, FaultInjector
from .framing import Reply, Request
from .jobs import RESULTS_PATH, JobSettings
from .keys import ALL_SCOPES, KeySpec, mask_api_key
from .replies import ErrorReplies, json_reply
from .state import EmulatorState
from .validation import validate_sign_up_sources, validate_sign_up_units

__all__ = ["CONTROL_PREFIX", "CONTROL_ROUTES", "ControlRoute", "ControlRoutes"]

CONTROL_PREFIX = "/_emulator"

#: A control handler gets the query parameters and the JSON object body (``{}`` for GET).
ControlHandler = Callable[[Mapping[str, list[str]], dict[str, Any]], Any]
#: A handler as the route table holds it: called with the :class:`ControlRoutes` that serves it.
RouteHandler = Callable[["ControlRoutes", Mapping[str, list[str]], dict[str, Any]], Any]


@dataclass(frozen=True)
class ControlRoute:
    """One control or inspection route: where it lives below ``/_emulator``, its handler, what it does.

    ``handler`` is None for the results file, which is served as JSON Lines rather than JSON.
    """

    method: str
    path: str
    handler: RouteHandler | None
    description: str


class ControlRoutes:
    """Answers ``/_emulator/...`` requests against one server's state and fault injector."""

    def __init__(
        self, state: EmulatorState, faults: FaultInjector, errors: ErrorReplies, url: Callable[[], str]
    ) -> None:
        self.state = state
        self.faults = faults
        self.errors = errors
        self._url = url
        #: (method, route below /_emulator) -> handler.
        self.table: dict[tuple[str, str], ControlHandler] = {
            (route.method, route.path): functools.partial(route.handler, self)
            for route in CONTROL_ROUTES
            if route.handler is not None
        }

    @staticmethod
    def serves(path: str) -> bool:
        return path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")

    def handle(self, req: Request) -> Reply:
        try:
            if req.path.startswith(RESULTS_PATH) and req.method == "GET":
                return self._results_file(req)
            return json_reply(self._route(req))
        except ApiError as exc:
            return self.errors(exc.status, exc.message)
        except ValueError as exc:
            return self.errors(400, str(exc))

    def _route(self, req: Request) -> Any:
        route = req.path[len(CONTROL_PREFIX) :].rstrip("/") or "/"
        params: Mapping[str, list[str]] = {}
        data: dict[str, Any] = {}
        if req.method == "GET":
            params = parse_qs(req.query)
        elif req.method in ("POST", "DELETE"):
            # The body is read before the route is looked up, so a malformed body is a 400 anywhere.
            data = _control_body(req.body)
        handler = self.table.get((req.method, route))
        if handler is None:
            raise ApiError(404, f"no control route {req.method} {req.path}; GET {CONTROL_PREFIX}/ lists them")
        return handler(params, data)

    def _results_file(self, req: Request) -> Reply:
        authorization = "authorization" in req.headers
        body = self.state.jobs.download(req.path, req.query, authorization, req.headers.get("host", ""))
        return Reply(200, body, "application/jsonl")

    # -- handlers ---------------------------------------------------------------------------

    def _index(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        # Keeps the health fields, so whatever probed GET /_emulator/ for liveness still works.
        return {
            **self._health(params, data),
            "routes": [
                {"method": r.method, "path": f"{CONTROL_PREFIX}{r.path}", "description": r.description}
                for r in CONTROL_ROUTES
            ],
            "api": [
                {
                    "name": r.name,
                    "method": r.method,
                    "path": r.path,
                    "scopes": list(r.scopes),
                    "rate_limit": r.rate_limit,
                }
                for r in API_ROUTES.by_name.values()
            ],
        }

    def _health(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        return {"status": "ok", "url": self._url()}

    def _set_job_settings(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        settings = JobSettings.from_mapping(data)
        self.state.jobs.configure(settings)
        return settings.to_dict()

    def _release_jobs(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        ids = data.get("ids")
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
            raise ApiError(400, "'ids' must be a list of job ids (omit it to release every held job)")
        return {"released": self.state.jobs.release(ids, time.monotonic())}

    def _keys(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        return {mask_api_key(k): spec.to_dict() for k, spec in self.state.keys.items()}

    def _sign_up(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        return {"sources": self.state.sign_up_sources, "units": self.state.sign_up_units}

    def _requests(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        endpoint = params.get("endpoint", [None])[0]
        if endpoint is not None and endpoint not in ENDPOINT_NAMES:
            raise ApiError(400, f"unknown endpoint {endpoint!r}; known: {list(ENDPOINT_NAMES)}")
        try:
            limit = int(params["limit"][0]) if "limit" in params else None
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        entries = [e for e in self.state.request_log if endpoint is None or e["endpoint"] == endpoint]
        if limit is not None:
            entries = entries[-limit:] if limit > 0 else []
        return [{**e, "body": _decode_body(e["body"])} for e in entries]

    def _reset(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        self.state.reset()
        self.faults.configure(FaultConfig())
        return {"reset": True}

    def _add_key(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        key, scopes = data.get("key"), data.get("scopes", list(ALL_SCOPES))
        if not isinstance(key, str) or not key:
            raise ApiError(400, "'key' must be a non-empty string")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ApiError(400, "'scopes' must be a list of scope strings")
        v2_access = data.get("v2_access", True)
        if not isinstance(v2_access, bool):
            raise ApiError(400, "'v2_access' must be true or false")
        spec = KeySpec(
            scopes=scopes,
            company_name=str(data.get("company_name") or "Emulated Co"),
            application_name=str(data.get("application_name") or "Attentive Emulator"),
            v2_access=v2_access,
        )
        self.state.add_key(key, spec)
        return {"key": mask_api_key(key), **spec.to_dict()}

    def _remove_key(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        key = data.get("key")
        if not isinstance(key, str):
            raise ApiError(400, "body must contain the 'key' to remove")
        return {"removed": self.state.remove_key(key), "key": mask_api_key(key)}

    def _set_faults(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        cfg = FaultConfig.from_mapping(data)
        self.faults.configure(cfg)
        return cfg.to_dict()

    def _seed_opted_out(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        phones = data.get("phones")
        if not isinstance(phones, list):
            raise ApiError(400, "body must be {'phones': [...]}")
        self.state.seed_opted_out(phones)
        return {"phones": sorted(self.state.opted_out)}

    def _set_sign_up(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        if "sources" in data:
            self.state.sign_up_sources = validate_sign_up_sources(data["sources"])
        if "units" in data:
            self.state.sign_up_units = validate_sign_up_units(data["units"])
        return self._sign_up(params, data)


# In the order the index and ``attentive-emulator --help`` list them: inspection first, then control.
CONTROL_ROUTES: tuple[ControlRoute, ...] = (
    ControlRoute(
        "GET", "/", ControlRoutes._index, "this index: every control and inspection route, and every API endpoint"
    ),
    ControlRoute("GET", "/health", ControlRoutes._health, "liveness and the API base URL"),
    ControlRoute(
        "GET",
        "/stats",
        lambda c, p, d: c.state.stats(),
        "per-endpoint counts by route name, busiest second, repeat subscribes",
    ),
    ControlRoute("GET", "/requests", ControlRoutes._requests, "the request log, keys masked (?endpoint=NAME&limit=N)"),
    ControlRoute(
        "GET",
        "/attributes",
        lambda c, p, d: c.state.attributes,
        "custom attributes by subscriber (v1 and v2 bulk writes)",
    ),
    ControlRoute("GET", "/events", lambda c, p, d: c.state.events, "custom events received"),
    ControlRoute(
        "GET", "/subscriptions", lambda c, p, d: c.state.subscriptions_dict(), "subscriptions by identifier and type"
    ),
    ControlRoute("GET", "/messages", lambda c, p, d: c.state.messages, "texts Attentive would have sent"),
    ControlRoute("GET", "/identities", lambda c, p, d: c.state.identities, "identity-resolution requests received"),
    ControlRoute(
        "GET",
        "/jobs",
        lambda c, p, d: c.state.jobs.infos(),
        "v2 bulk jobs: id, kind, status, records, masked key, held",
    ),
    ControlRoute(
        "GET",
        "/jobs/settings",
        lambda c, p, d: c.state.jobs.settings.to_dict(),
        "bulk job delay, hold, failure share and results faults",
    ),
    ControlRoute(
        "POST", "/jobs/settings", ControlRoutes._set_job_settings, "replace the job settings (unspecified: defaults)"
    ),
    ControlRoute("POST", "/jobs/release", ControlRoutes._release_jobs, "let held jobs complete ({ids: [...]}, or all)"),
    ControlRoute(
        "GET",
        "/segments",
        lambda c, p, d: c.state.segments.infos(),
        "v2 segments by externalId, with members and archived flag",
    ),
    ControlRoute(
        "GET",
        "/results",
        lambda c, p, d: c.state.jobs.downloads,
        "results-file downloads: job, status, Authorization sent",
    ),
    ControlRoute(
        "GET", "/results/{jobId}.jsonl", None, "a completed job's results (pre-signed: expires, sig; no key needed)"
    ),
    ControlRoute(
        "GET", "/opted_out", lambda c, p, d: {"phones": sorted(c.state.opted_out)}, "phones that cannot be subscribed"
    ),
    ControlRoute("POST", "/opted_out", ControlRoutes._seed_opted_out, "mark phones opted out ({phones: [...]})"),
    ControlRoute(
        "GET",
        "/enumerated_attributes",
        lambda c, p, d: c.state.enumerated_attributes,
        "UI-created attributes and their allowed values",
    ),
    ControlRoute(
        "POST",
        "/enumerated_attributes",
        lambda c, p, d: c.state.set_enumerated_attributes(d),
        "declare enumerated attributes",
    ),
    ControlRoute("GET", "/keys", ControlRoutes._keys, "API keys (masked) with scopes, company and v2 access"),
    ControlRoute("POST", "/keys", ControlRoutes._add_key, "add a key ({key, scopes, company_name, v2_access})"),
    ControlRoute("DELETE", "/keys", ControlRoutes._remove_key, "revoke a key ({key})"),
    ControlRoute("GET", "/limits", lambda c, p, d: dict(c.state.limiter.limits), "requests per second per endpoint"),
    ControlRoute(
        "POST", "/limits", lambda c, p, d: c.state.set_limits(d), "update limits by endpoint name ('*' = all)"
    ),
    ControlRoute("GET", "/faults", lambda c, p, d: c.faults.config.to_dict(), "the fault configuration"),
    ControlRoute("POST", "/faults", ControlRoutes._set_faults, "replace the fault configuration ({} clears it)"),
    ControlRoute("GET", "/sign_up", ControlRoutes._sign_up, "sign-up sources and units"),
    ControlRoute("POST", "/sign_up", ControlRoutes._set_sign_up, "configure sign-up sources and/or units"),
    ControlRoute("POST", "/reset", ControlRoutes._reset, "clear data, stats, jobs, faults and windows; keep keys"),
)


def _control_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "control request body must be a JSON object")
    return data


def _decode_body(raw: bytes) -> Any:
    # The log keeps raw bytes so the hot path never copies bodies; decode only on inspection.
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")
