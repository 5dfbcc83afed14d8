"""The emulated Attentive v1 API: its route table and the handlers that apply each call.

Handlers adapt a call to :class:`~.state.EmulatorState`, where Attentive's rules live; the
request pipeline (:mod:`.api`) has already checked the key, its scope, the rate limit and, for
endpoints with a body, the OpenAPI schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .routing import ApiCall, Route

if TYPE_CHECKING:
    from .state import EmulatorState

__all__ = ["V1_ROUTES"]


def _me(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return 200, call.spec.me()


def _post_attributes(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return state.post_attributes(call.body)


def _get_attributes(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return state.get_attributes(call.param("phone"), call.param("email"))


def _post_event(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return state.post_event(call.body, call.received_at)


def _subscribe(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return state.post_subscribe(call.body, call.spec.company_name)


def _unsubscribe(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return state.post_unsubscribe(call.body, call.spec.company_name)


def _get_subscriptions(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return state.get_subscriptions(call.param("phone"), call.param("email"))


def _identify(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return state.post_identity(call.body, call.received_at)


# Bodies are "required" where the OpenAPI requestBody says so. Attentive's GET
# /v1/attributes/custom is guarded by the *write* scope (a quirk of its spec, kept as is).
V1_ROUTES: tuple[Route, ...] = (
    Route("me", "GET", "/v1/me", None, 150, _me),
    Route("attributes", "POST", "/v1/attributes/custom", "attributes:write", 150, _post_attributes, "required"),
    Route("attributes_read", "GET", "/v1/attributes/custom", "attributes:write", 150, _get_attributes),
    Route("events", "POST", "/v1/events/custom", "events:write", 150, _post_event, "required"),
    Route("subscribe", "POST", "/v1/subscriptions", "subscriptions:write", 10, _subscribe, "required"),
    Route("unsubscribe", "POST", "/v1/subscriptions/unsubscribe", "subscriptions:write", 5, _unsubscribe, "required"),
    Route("subscriptions_read", "GET", "/v1/subscriptions", "subscriptions:read", 150, _get_subscriptions),
    Route("identity", "POST", "/v1/identity-resolution/user-identifiers", "identity:write", 10, _identify, "optional"),
)
