"""The ``/_emulator`` control routes: inspect the emulated state and steer keys, limits, faults and data.

Never subject to faults, keys or rate limits. Each route is one entry of :attr:`ControlRoutes.table`
plus its handler, which returns the JSON payload of a 200 answer or raises :class:`~.errors.ApiError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from .endpoints import ENDPOINT_NAMES
from .errors import ApiError
from .faults import FaultConfig, FaultInjector
from .framing import Reply, Request
from .keys import ALL_SCOPES, KeySpec, mask_api_key
from .replies import ErrorReplies, json_reply
from .state import EmulatorState
from .validation import validate_sign_up_sources, validate_sign_up_units

__all__ = ["CONTROL_PREFIX", "ControlRoutes"]

CONTROL_PREFIX = "/_emulator"

#: A control handler gets the query parameters and the JSON object body (``{}`` for GET).
ControlHandler = Callable[[Mapping[str, list[str]], dict[str, Any]], Any]


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
            ("GET", "/"): self._health,
            ("GET", "/health"): self._health,
            ("GET", "/stats"): lambda params, data: self.state.stats(),
            ("GET", "/attributes"): lambda params, data: self.state.attributes,
            ("GET", "/events"): lambda params, data: self.state.events,
            ("GET", "/subscriptions"): lambda params, data: self.state.subscriptions_dict(),
            ("GET", "/messages"): lambda params, data: self.state.messages,
            ("GET", "/identities"): lambda params, data: self.state.identities,
            ("GET", "/opted_out"): lambda params, data: {"phones": sorted(self.state.opted_out)},
            ("GET", "/enumerated_attributes"): lambda params, data: self.state.enumerated_attributes,
            ("GET", "/keys"): self._keys,
            ("GET", "/limits"): lambda params, data: dict(self.state.limiter.limits),
            ("GET", "/faults"): lambda params, data: self.faults.config.to_dict(),
            ("GET", "/sign_up"): self._sign_up,
            ("GET", "/requests"): self._requests,
            ("POST", "/reset"): self._reset,
            ("POST", "/keys"): self._add_key,
            ("DELETE", "/keys"): self._remove_key,
            ("POST", "/faults"): self._set_faults,
            ("POST", "/limits"): lambda params, data: self.state.set_limits(data),
            ("POST", "/enumerated_attributes"): lambda params, data: self.state.set_enumerated_attributes(data),
            ("POST", "/opted_out"): self._seed_opted_out,
            ("POST", "/sign_up"): self._set_sign_up,
        }

    @staticmethod
    def serves(path: str) -> bool:
        return path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")

    def handle(self, req: Request) -> Reply:
        try:
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
            raise ApiError(404, f"no control route {req.method} {req.path}")
        return handler(params, data)

    # -- handlers ---------------------------------------------------------------------------

    def _health(self, params: Mapping[str, list[str]], data: dict[str, Any]) -> Any:
        return {"status": "ok", "url": self._url()}

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
        spec = KeySpec(
            scopes=scopes,
            company_name=str(data.get("company_name") or "Emulated Co"),
            application_name=str(data.get("application_name") or "Attentive Emulator"),
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
