"""Segment members (Add / Remove / Mirror): a warehouse audience as an Attentive segment, texting no one.

Membership is tracked per primary key. A person is added under every mapped identifier (``phone`` in E.164,
``email``, ``client_user_id``); when their identifiers change they are added under the new ones, and the old ones
are removed only once that add has completed, and only when they share no identifier with anyone who stays in
the segment (the person's own new set included): Attentive finds a member by any of their identifiers, so a
removal naming one that someone still holds would take that someone out. A mirror only ever removes people it
added. See ``docs/segments.md``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow_provider_attentive.client import EndpointName, Result
from airflow_provider_attentive.sync.errors import SyncConfigError
from airflow_provider_attentive.sync.object_type import (
    IDENTIFIER_FIELDS,
    Answer,
    Invalid,
    ObjectType,
    Planned,
    Prepared,
    Run,
)
from airflow_provider_attentive.sync.objects.segments.members import (
    ADDS,
    current,
    id_values,
    items_of,
    retired,
    valid_identity,
)
from airflow_provider_attentive.sync.objects.segments.phases import SegmentPhases
from airflow_provider_attentive.sync.objects.segments.segment import SegmentSpec
from airflow_provider_attentive.sync.state import StateRow
from airflow_provider_attentive.sync.values import mask_key

__all__ = ["SegmentsType"]

IDENTITY_MAX = 1000  # the state table's identity column is VARCHAR(1000)
MEMBERSHIPS = frozenset({"in_segment", "out_of_segment"})
_RETIRE = "retire"  # classify's own mark: the row is done but its former identifiers are still to be removed


class SegmentsType(ObjectType):
    """Members of one segment: ``POST`` / ``DELETE /v2/bulk/segments/members`` (see the module docstring)."""

    object_type = "segments"
    modes = ("add", "remove", "mirror")
    endpoint = EndpointName.SEGMENT_MEMBERS_ADD
    # Adding or removing a member again changes nothing and texts nobody: a row a crash left pending is resent.
    pending_status = "failed"
    extra_ops = ("retired",)

    def __init__(self, *, segment: SegmentSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(segment, SegmentSpec):
            raise SyncConfigError("segment must be a SegmentSpec")
        self.segment = segment
        self._prior: tuple[str, StateRow | None] | None = None

    def fingerprint_extra(self) -> Any:
        return [self.segment.external_id]

    def default_mapping(self, pk_column: str) -> list[tuple[str, str]]:
        return [(col, col.lower()) for col in self.columns if col.lower() in IDENTIFIER_FIELDS]

    def check_destination(self, column: str, dest: str) -> None:
        if dest not in IDENTIFIER_FIELDS:
            raise SyncConfigError(
                f"column {column!r} maps to {dest!r}; segment members take phone, email and client_user_id only"
            )

    def check_fields(self) -> None:
        if not {d for _, d in self.fields} & set(IDENTIFIER_FIELDS):
            raise SyncConfigError(self._no_identifier_message())

    # -- per row ---------------------------------------------------------------------------------------------

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        user = self._user(row)
        if isinstance(user, Invalid):
            return user
        user_obj, note = user
        member = {k: user_obj[k] for k in ("phone", "email") if user_obj.get(k)}
        client_user_id = (user_obj.get("externalIdentifiers") or {}).get("clientUserId")
        if client_user_id:
            member["clientUserId"] = client_user_id
        prior = self._prior[1] if self._prior is not None and self._prior[0] == key else None
        self._prior = None
        identity: dict[str, Any] = dict(member)
        former = self._former(prior, member)
        if former:
            identity["retired"] = former
        if len(json.dumps(identity, sort_keys=True)) > IDENTITY_MAX:
            return Invalid(
                "its identifiers, with the former ones still to be removed from the segment, are too long to record; "
                "not sent"
            )
        return Prepared(payload=member, identity=identity, note=note)

    @staticmethod
    def _former(prior: StateRow | None, member: dict[str, str]) -> list[dict[str, str]]:
        """Identifier sets the segment may still have this person under, which the new set does not cover.

        A set sharing an identifier with the new one is dropped: it is the same person, found by that identifier.
        """
        if prior is None or prior.member == "out_of_segment" or not prior.identity:
            return []
        old = json.loads(prior.identity)  # checked readable by classify
        values = id_values(member)
        out: list[dict[str, str]] = []
        seen: set[frozenset[tuple[str, str]]] = set()
        for ids in [*retired(old), current(old)]:
            fingerprint = frozenset(ids.items())
            if ids and not id_values(ids) & values and fingerprint not in seen:
                seen.add(fingerprint)
                out.append(ids)
        return out

    # -- run hooks -------------------------------------------------------------------------------------------

    def bind(self, run: Run) -> None:
        super().bind(run)
        self._prior = None
        self.phases = SegmentPhases(self, run)

    def summary_counters(self) -> dict[str, Any]:
        return {
            "segment_external_id": self.segment.external_id,
            "segment": None,
            "added": 0,
            "removed": 0,
            "retired_identifiers": 0,
            "kept_shared": 0,
            "blocked_removals": 0,
        }

    def before_rows(self) -> None:
        self.phases.before_rows()

    def observe(self, key: str, row: Sequence[Any]) -> None:
        self.phases.observe(key)

    def stream_endpoint(self) -> str:
        return EndpointName.SEGMENT_MEMBERS_REMOVE if self.mode == "remove" else EndpointName.SEGMENT_MEMBERS_ADD

    def unrecognised_state(self, state: StateRow) -> str | None:
        if state.member is not None and state.member not in MEMBERSHIPS:
            return f"its state row has membership {str(state.member)[:40]!r}, which this version never writes"
        return None

    def classify(
        self, key: str, row: Sequence[Any], state: StateRow | None, status: str | None, row_hash: str
    ) -> str | None:
        if self.mode == "remove":
            done = state is not None and state.member == "out_of_segment" and status == "ok"
            op = None if done and state is not None and state.row_hash == row_hash else "removed"
        else:
            op = self._add_op(state, status, row_hash)
        if op is None:
            return None
        if state is not None and state.identity and not _readable(state.identity):
            # Who the segment has this person under is unknown: adding or removing on a guess could strand or
            # remove someone, so nothing is sent until the row is fixed. (Read only for rows that need a request.)
            run = self.run
            run.summary.held_unknown_state += 1
            run.summary.error(
                mask_key(key),
                f"held, nothing sent: its identity in {run.state.state_table} is not one this version writes; "
                "fix or delete the row",
            )
            return None
        if op == _RETIRE:
            self.phases.retire(key)
            return None
        self._prior = (key, state)
        return op

    @staticmethod
    def _add_op(state: StateRow | None, status: str | None, row_hash: str) -> str | None:
        if state is None or state.member != "in_segment":
            return "added"
        if status == "ok":
            if state.row_hash == row_hash:
                return None
            # Added under these identifiers (not yet confirmed complete): the former ones wait for removal.
            return _RETIRE if state.attempt_hash == row_hash else "changed"
        if state.op == "retired" and state.attempt_hash == row_hash:
            # A failed removal of former identifiers is tried again; a rejected one waits for new identifiers.
            return _RETIRE if status == "failed" else None
        return "added" if state.op == "removed" else "changed"

    def body(self, op: str, prepared: Prepared) -> dict[str, Any]:
        return {"members": items_of(op, prepared.identity)}

    def read_ok(self, item: Planned, result: Result) -> Answer:
        identity = item.prepared.identity if item.prepared is not None else {}
        extra = self.run.summary.extra
        if item.op in ADDS:
            extra["added"] += 1
            # Complete only once the former identifiers are removed too (the next run sends that removal).
            return Answer(member="in_segment", confirm=not retired(identity))
        if item.op == "removed":
            extra["removed"] += 1
            return Answer(member="out_of_segment", identity=current(identity) or None)
        extra["retired_identifiers"] += len(retired(identity))
        return Answer(identity=current(identity) or None)

    def after_rows(self) -> None:
        self.phases.after_rows()


def _readable(identity: str) -> bool:
    try:
        return valid_identity(json.loads(identity))
    except ValueError:
        return False
