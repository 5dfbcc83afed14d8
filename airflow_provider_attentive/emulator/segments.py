"""Segments of the emulated v2 API: their records, Attentive's rules for them, and their members.

A segment is known by its ``externalId``, which stays taken after the segment is archived.
Archived segments answer 404 and are left out of listings; Attentive has no route that lists a
segment's members, so only the inspection view shows them. Members are keyed by phone, else
email, else clientUserId (:func:`~.validation.segment_member_key`).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypedDict

from .errors import ApiError
from .validation import parse_rfc3339, segment_member_key

__all__ = [
    "DEFAULT_DESCRIPTION",
    "DEFAULT_LIST_LIMIT",
    "MAX_LIST_LIMIT",
    "NOT_A_MEMBER",
    "Segment",
    "SegmentInfo",
    "SegmentStore",
]

#: The description Attentive gives a segment created without one.
DEFAULT_DESCRIPTION = "Manual Segment Upload Public API V2"
NOT_A_MEMBER = "not a member of the segment"
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 1000


class SegmentInfo(TypedDict):
    """A segment as the inspection route shows it: its fields, whether it is archived, and its member keys."""

    externalId: str
    name: str
    description: str
    created: str
    updated: str
    archived: bool
    members: list[str]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Segment:
    """One segment; ``seq`` orders listings and cursors (creation order)."""

    external_id: str
    name: str
    description: str
    created: float
    updated: float
    seq: int
    archived: bool = False
    members: dict[str, dict[str, Any]] = field(default_factory=dict)

    def response(self) -> dict[str, Any]:
        """The ``SegmentResponse`` of this segment."""
        return {
            "externalId": self.external_id,
            "name": self.name,
            "description": self.description,
            "created": _iso(self.created),
            "updated": _iso(self.updated),
        }


def _trimmed(body: Mapping[str, Any], name: str, min_len: int = 1) -> str | None:
    """The field with its whitespace trimmed (as Attentive stores it); None when absent."""
    value = body.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ApiError(400, f"{name} cannot be empty or whitespace only")
    if len(value) < min_len:
        raise ApiError(400, f"{name} must be at least {min_len} characters")
    return str(value)


class SegmentStore:
    """Every segment of one emulator, archived ones included (their externalIds stay taken)."""

    def __init__(self) -> None:
        self.segments: dict[str, Segment] = {}
        self._seq = 0

    def get(self, external_id: str) -> Segment:
        """The live segment ``external_id``; unknown and archived ones are 404."""
        segment = self.segments.get(external_id)
        if segment is None or segment.archived:
            raise ApiError(404, f"segment with externalId {external_id!r} not found")
        return segment

    def create(self, body: Mapping[str, Any], now: float) -> dict[str, Any]:
        name = _trimmed(body, "name")
        if name is None:
            raise ApiError(400, "name is required")
        description = _trimmed(body, "description", min_len=2) or DEFAULT_DESCRIPTION
        external_id = _trimmed(body, "externalId") or f"SEG_{secrets.token_hex(6)}"
        existing = self.segments.get(external_id)
        if existing is not None:
            state = "an archived segment" if existing.archived else "another segment"
            raise ApiError(409, f"externalId {external_id!r} is already used by {state}")
        self._seq += 1
        segment = Segment(external_id, name, description, now, now, self._seq)
        self.segments[external_id] = segment
        return segment.response()

    def update(self, external_id: str, body: Mapping[str, Any], now: float) -> dict[str, Any]:
        segment = self.get(external_id)
        name = _trimmed(body, "name")
        description = _trimmed(body, "description", min_len=2)
        if name is None and description is None:
            raise ApiError(400, "at least one field (name or description) must be provided")
        segment.name = name or segment.name
        segment.description = description or segment.description
        segment.updated = now
        return segment.response()

    def archive(self, external_id: str, now: float) -> None:
        segment = self.get(external_id)
        segment.archived = True
        segment.updated = now

    def list(
        self,
        name: str | None,
        external_id: str | None,
        updated_since: str | None,
        cursor: str | None,
        limit: str | None,
    ) -> dict[str, Any]:
        """``ListSegmentsResponse``: live segments in creation order, filtered, one page after ``cursor``."""
        for label, value in (("name", name), ("externalId", external_id), ("cursor", cursor)):
            if value is not None and not value.strip():
                raise ApiError(400, f"{label} cannot be empty or whitespace only")
        try:
            size = DEFAULT_LIST_LIMIT if limit is None else int(limit)
        except ValueError:
            raise ApiError(400, f"limit must be an integer, got {limit!r}") from None
        if not 1 <= size <= MAX_LIST_LIMIT:
            raise ApiError(400, f"limit must be between 1 and {MAX_LIST_LIMIT}, got {size}")
        since = None
        if updated_since is not None:
            parsed = parse_rfc3339(updated_since)
            if parsed is None:
                raise ApiError(400, f"updatedSince {updated_since!r} is not an ISO 8601 date-time with an offset")
            since = parsed.timestamp()
        after = _read_cursor(cursor) if cursor is not None else 0
        wanted = name.strip().lower() if name else None
        matches = [
            s
            for s in self.segments.values()
            if not s.archived
            and s.seq > after
            and (wanted is None or wanted in s.name.lower())
            and (external_id is None or s.external_id == external_id)
            and (since is None or s.updated >= since)
        ]
        page, more = matches[:size], len(matches) > size
        return {
            "segments": [s.response() for s in page],
            "cursor": _write_cursor(page[-1].seq) if more else None,
            "hasMore": more,
        }

    # -- members (applied when a member job completes; an ApiError is the member's outcome) ----

    def add_member(self, external_id: str, member: Mapping[str, Any]) -> tuple[int, str]:
        key = segment_member_key(member)
        segment = self.get(external_id)
        known = key in segment.members
        segment.members[key] = dict(member)
        return 200, "already a member of the segment" if known else "added to the segment"

    def remove_member(self, external_id: str, member: Mapping[str, Any]) -> tuple[int, str]:
        key = segment_member_key(member)
        if self.get(external_id).members.pop(key, None) is None:
            return 404, NOT_A_MEMBER
        return 200, "removed from the segment"

    def infos(self) -> dict[str, SegmentInfo]:
        """Every segment, archived ones too, with its members' keys (inspection only)."""
        return {
            s.external_id: SegmentInfo(
                externalId=s.external_id,
                name=s.name,
                description=s.description,
                created=_iso(s.created),
                updated=_iso(s.updated),
                archived=s.archived,
                members=sorted(s.members),
            )
            for s in self.segments.values()
        }


def _write_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": seq}).encode()).decode()


def _read_cursor(cursor: str) -> int:
    try:
        after = json.loads(base64.urlsafe_b64decode(cursor.encode()))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ApiError(400, f"cursor {cursor!r} is not a cursor this API returned") from None
    if isinstance(after, bool) or not isinstance(after, int):
        raise ApiError(400, f"cursor {cursor!r} is not a cursor this API returned")
    return after
