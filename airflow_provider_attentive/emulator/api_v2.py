"""The emulated Attentive v2 API (bulk jobs and segments): its route table and the handlers that apply each call.

Every route is a beta endpoint (``Route.beta``): a key without v2 access gets 404, as from
Attentive. Bulk requests are checked whole on arrival (schema, custom attribute value types, the
segment's existence) and answered 202 with a job id; their items are applied one by one when the
job completes (:mod:`.jobs`), each item's problem going to its results line instead.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .routing import ApiCall, Route
from .validation import bulk_user_key, check_attribute_properties

if TYPE_CHECKING:
    from .state import EmulatorState

__all__ = ["V2_ROUTES"]

_BULK_SCOPES = ("attributes:write", "subscriptions:write")


def _accepted(kind: str, job_id: str) -> tuple[int, Any]:
    return 202, {"message": f"Bulk {kind} job successfully submitted", "batchJobId": job_id}


# -- bulk user attributes -------------------------------------------------------------------


def _bulk(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    body = call.body
    # The published UserAttributes schema requires nothing; an upload without users is no upload.
    if not isinstance(body, dict) or "users" not in body:
        raise ApiError(400, "request body must be an object with users (1 to 256 user records)")
    users = body["users"]
    for i, user in enumerate(users):
        custom = (user.get("attributes") or {}).get("custom") or {}
        for name, value in custom.items():
            if isinstance(value, (list, dict)):
                kind = "an array" if isinstance(value, list) else "a map"
                raise ApiError(400, f"users[{i}].attributes.custom.{name}: a custom attribute value cannot be {kind}")
    carrying = sum(1 for user in users if "subscriptions" in user)
    job = state.jobs.submit("bulk", call.key, users, functools.partial(_apply_user, state), time.monotonic(), carrying)
    state.bulk_users_with_subscriptions += carrying
    return _accepted("user attributes", job.id)


def _apply_user(state: EmulatorState, user: Mapping[str, Any]) -> tuple[int, str]:
    """One bulk user, applied: its custom attributes go to the store v1 writes to."""
    key = bulk_user_key(user.get("identifiers"))
    custom = (user.get("attributes") or {}).get("custom") or {}
    check_attribute_properties(custom, state.enumerated_attributes)
    state.attributes.setdefault(key, {}).update(custom)
    return 200, "user attributes updated"


def _bulk_job(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return 200, state.jobs.status(call.path_params["bulkJobId"], call.key, call.host)


# -- segment members ------------------------------------------------------------------------


def _members(adding: bool, state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    external_id = call.body["externalId"]
    state.segments.get(external_id)  # an unknown or archived segment is refused whole
    segments = state.segments
    apply = segments.add_member if adding else segments.remove_member
    kind = "segment_members_add" if adding else "segment_members_remove"
    job = state.jobs.submit(
        kind, call.key, call.body["members"], functools.partial(apply, external_id), time.monotonic()
    )
    return _accepted("segment member add" if adding else "segment member remove", job.id)


# -- segments -------------------------------------------------------------------------------


def _segment_create(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return 201, state.segments.create(call.body, time.time())


def _segment_read(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return 200, state.segments.get(call.path_params["externalId"]).response()


def _segment_update(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return 200, state.segments.update(call.path_params["externalId"], call.body, time.time())


def _segment_archive(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    state.segments.archive(call.path_params["externalId"], time.time())
    return 204, None


def _segments_list(state: EmulatorState, call: ApiCall) -> tuple[int, Any]:
    return 200, state.segments.list(
        call.param("name"),
        call.param("externalId"),
        call.param("updatedSince"),
        call.param("cursor"),
        call.param("limit"),
    )


_SEGMENT = "/v2/segments/external/{externalId}"

# Rates are the "Default Rate Limit" each operation's description gives; bodies are "required"
# where the OpenAPI requestBody says so.
V2_ROUTES: tuple[Route, ...] = (
    Route("bulk", "POST", "/v2/bulk/user/attributes", _BULK_SCOPES, 100, _bulk, "required", beta=True),
    Route("bulk_job", "GET", "/v2/bulk/job/{bulkJobId}", None, 100, _bulk_job, beta=True),
    Route(
        "segment_members_add",
        "POST",
        "/v2/bulk/segments/members",
        "segments:write",
        100,
        functools.partial(_members, True),
        "required",
        beta=True,
    ),
    Route(
        "segment_members_remove",
        "DELETE",
        "/v2/bulk/segments/members",
        "segments:write",
        100,
        functools.partial(_members, False),
        "required",
        beta=True,
    ),
    Route("segment_create", "POST", "/v2/segments", "segments:write", 100, _segment_create, "required", beta=True),
    Route("segment_read", "GET", _SEGMENT, "segments:read", 100, _segment_read, beta=True),
    Route("segment_update", "PATCH", _SEGMENT, "segments:write", 100, _segment_update, "required", beta=True),
    Route("segment_archive", "DELETE", _SEGMENT, "segments:write", 100, _segment_archive, beta=True),
    Route("segments_list", "GET", "/v2/segments", "segments:read", 100, _segments_list, beta=True),
)
