"""Segment members: the identifiers a state row keeps for one person, and their delivery as v2 bulk jobs.

A member is known to Attentive by its identifiers (``phone``, ``email``, ``clientUserId``; one at least). The
state row of a person keeps the identifiers the segment has them under, plus the *retired* sets: identifiers the
person had before, still to be removed once the add under the new ones has completed::

    {"phone": "+14155550111", "email": "ann@example.com", "retired": [{"phone": "+14155550100"}]}

:class:`SegmentMembersDelivery` sends rows as ``POST`` (add) and ``DELETE`` (remove) ``/v2/bulk/segments/members``,
up to 10,000 members a request, and reads each member's line of the job's results; what a row submitted is
always derived from its operation and its stored identity (:func:`items_of`), so a later run matches the lines
of a job an earlier run submitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from airflow_provider_attentive.client import EndpointName, RequestOutcome, Result
from airflow_provider_attentive.sync.bulk import BulkJobDelivery, job_result, read_line
from airflow_provider_attentive.sync.delivery import Sender
from airflow_provider_attentive.sync.errors import SyncConfigStop
from airflow_provider_attentive.sync.object_type import Planned

__all__ = [
    "ID_FIELDS",
    "MAX_MEMBERS",
    "SegmentMembersDelivery",
    "current",
    "id_values",
    "items_of",
    "retired",
    "valid_identity",
]

ID_FIELDS = ("phone", "email", "clientUserId")
MAX_MEMBERS = 10_000  # members per bulk request (Attentive's SegmentMembers maxItems)
ADDS = ("added", "changed")


def current(identity: dict[str, Any]) -> dict[str, str]:
    """The identifiers the segment has (or is being sent) the person under."""
    return {k: identity[k] for k in ID_FIELDS if isinstance(identity.get(k), str) and identity[k]}


def retired(identity: dict[str, Any]) -> list[dict[str, str]]:
    """Former identifier sets still to be removed."""
    sets = identity.get("retired")
    if not isinstance(sets, list):
        return []
    return [ids for ids in (current(s) for s in sets if isinstance(s, dict)) if ids]


def valid_identity(identity: Any) -> bool:
    """Whether a stored identity is one this version writes (damaged ones are held, never guessed at)."""
    if not isinstance(identity, dict) or not current(identity):
        return False
    sets = identity.get("retired", [])
    return isinstance(sets, list) and all(isinstance(s, dict) and current(s) for s in sets)


def id_values(ids: dict[str, str]) -> set[str]:
    """The identifiers of a set as comparable values (an email's case does not make another person)."""
    return {f"{k}:{v.lower() if k == 'email' else v}" for k, v in ids.items()}


def items_of(op: str, identity: dict[str, Any]) -> list[dict[str, str]]:
    """The members a row's request carries: an add names the current set; a removal the current set (unless
    it stays, ``kept``) and the retired ones; a retirement only the retired ones."""
    if op in ADDS:
        return [current(identity)]
    if op == "removed":
        return ([] if identity.get("kept") else [current(identity)]) + retired(identity)
    return retired(identity)


class SegmentMembersDelivery(BulkJobDelivery):
    """Rows as segment member jobs: ``POST`` adds, ``DELETE`` removes, up to ``batch_size`` members a request.

    A remove whose line says the person is not a member is done: they are not in the segment, which is what
    was asked. A whole request answered 404 means the segment is gone (archived since the run began) or the
    account has no v2 access, 403 that the key lacks ``segments:write``: the run stops and its rows are resent
    by a later run.

    :param sender: the transport.
    :param external_id: the segment.
    :param batch_size: members per request (1-10,000).
    """

    kind = "segment member"

    def __init__(self, sender: Sender, *, external_id: str, batch_size: int = MAX_MEMBERS, **kwargs: Any) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_MEMBERS:
            raise ValueError(f"member_batch_size must be an integer from 1 to {MAX_MEMBERS}, got {batch_size!r}")
        super().__init__(sender, batch_size=batch_size, **kwargs)
        self.external_id = external_id
        self._refused: list[tuple[list[Planned], Result]] = []

    def bind(self, run: Any) -> None:
        super().bind(run)
        self._refused = []

    def bulk_endpoint(self, endpoint: str) -> EndpointName:
        if endpoint in (EndpointName.SEGMENT_MEMBERS_ADD, EndpointName.SEGMENT_MEMBERS_REMOVE):
            return EndpointName(endpoint)
        raise ValueError(f"segment members are sent to the member endpoints, not {endpoint!r}")

    def request_body(self, endpoint: EndpointName, items: Sequence[Planned]) -> dict[str, Any]:
        members = [member for item in items for member in items_of(item.op, self.stored_identity(item))]
        return {"externalId": self.external_id, "members": members}

    def split(self, batch: Sequence[Planned]) -> list[list[Planned]]:
        # A removal can name a person's former identifiers too: more members than rows.
        size = self.batch_size or MAX_MEMBERS
        requests: list[list[Planned]] = [[]]
        count = 0
        for item in batch:
            n = max(1, len(items_of(item.op, self.stored_identity(item))))
            if requests[-1] and count + n > size:
                requests.append([])
                count = 0
            requests[-1].append(item)
            count += n
        return [items for items in requests if items]

    def stored_identity(self, item: Planned) -> dict[str, Any]:
        return dict(item.prepared.identity) if item.prepared is not None else {}

    def items_of(self, op: str, identity: dict[str, Any]) -> list[dict[str, Any]]:
        return list(items_of(op, identity))

    def line_item(self, request: Any) -> Any:
        return request

    def line_result(self, key: str, response: dict[str, Any], endpoint: str) -> Result:
        if endpoint == EndpointName.SEGMENT_MEMBERS_REMOVE.value and response.get("status") == 404:
            message = str(response.get("message") or "")
            if "not a member" in message.lower():
                # Asked to leave a segment they are not in: the segment is as this sync wants it.
                return job_result(key, RequestOutcome.OK, 200, None)
        return read_line(key, response)

    def refused(self, result: Result, items: list[Planned]) -> bool:
        if result.status == 403:
            return False  # the recorder stops the run on a 403 and keeps the rows as failed
        if not self.run.halted:
            self.run.stop(
                SyncConfigStop(
                    f"Attentive answered HTTP 404 to the member request for segment {self.external_id!r} "
                    f"({result.error or 'not found'}): the segment was archived or deleted since the run began, or "
                    "the account lost v2 access. Nothing more was sent; the rows are resent by the next run, which "
                    "checks the segment first."
                )
            )
        self._refused.append((items, result))
        return True

    def hand_over(self, items: list[Planned]) -> None:
        self._refused.append((items, job_result(None, RequestOutcome.FAILED, None, "not sent: the run stopped")))

    def after_bulk(self, endpoint: str, rest: Iterator[Sequence[Planned]]) -> Iterator[tuple[Planned, Result]]:
        refused, self._refused = self._refused, []
        for items, result in refused:
            # Failed, not rejected: the rows are fine, the segment is not; a later run sends them.
            failed = job_result(None, RequestOutcome.FAILED, result.status, result.error or "segment not found")
            yield from ((item, failed) for item in items)
        yield from _unsent(rest)


def _unsent(rest: Iterable[Sequence[Planned]]) -> Iterator[tuple[Planned, Result]]:
    for batch in rest:
        for item in batch:
            yield item, job_result(item.key, RequestOutcome.FAILED, None, "not sent: the run stopped")
