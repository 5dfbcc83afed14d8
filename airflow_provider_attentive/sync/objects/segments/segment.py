"""The segment itself: found by external id, created when missing, its name kept in sync; and who owns it.

``<prefix>sync_segments`` (beside the state tables) records which sync keeps which segment. A sync writes its row
before it creates the segment, so a run killed between the create and its record still knows the segment as its
own next time. A segment this sync did not create (made by hand, or by another sync) is not taken over unless
``adopt_existing`` says so: a mirror only removes people it added, but two syncs on one segment would remove each
other's members, and a segment someone curates by hand is not the warehouse's to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_attentive.client import EndpointName, Result
from airflow_provider_attentive.sync.errors import AttentiveAuthError, AttentiveUnavailable, SyncConfigError
from airflow_provider_attentive.sync.object_type import Run
from airflow_provider_attentive.sync.state import StateStore, utcnow

__all__ = ["SegmentRegistry", "SegmentSpec", "ensure_segment"]

NAME_MAX = 240
DESCRIPTION_RANGE = (2, 500)
EXTERNAL_ID_MAX = 255


@dataclass(frozen=True)
class SegmentSpec:
    """The segment a sync keeps: its external id, name and (when managed) description."""

    external_id: str
    name: str
    description: str | None = None
    adopt_existing: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.external_id, str) or not self.external_id.strip():
            raise SyncConfigError("segment_external_id must be a non-empty string, e.g. 'vip_gold'")
        if self.external_id != self.external_id.strip() or len(self.external_id) > EXTERNAL_ID_MAX:
            raise SyncConfigError(
                f"segment_external_id must be 1-{EXTERNAL_ID_MAX} characters without surrounding spaces, "
                f"got {self.external_id[:60]!r}"
            )
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name.strip()) > NAME_MAX:
            raise SyncConfigError(f"segment_name must be 1-{NAME_MAX} characters, got {str(self.name)[:60]!r}")
        low, high = DESCRIPTION_RANGE
        if self.description is not None and (
            not isinstance(self.description, str) or not low <= len(self.description.strip()) <= high
        ):
            raise SyncConfigError(f"segment_description must be {low}-{high} characters, or None to leave it alone")


class SegmentRegistry:
    """Which sync keeps which segment (``<prefix>sync_segments``, same connection as the state)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.table = state.table_name("sync_segments")

    def ensure_table(self) -> None:
        self.state.create_table(
            self.table,
            f"""CREATE TABLE {self.table} (
                sync_id VARCHAR(250) NOT NULL PRIMARY KEY,
                external_id VARCHAR(255) NOT NULL,
                origin VARCHAR(16),
                recorded_at VARCHAR(32)
            )""",
        )

    def owners(self, external_id: str) -> dict[str, str]:
        """``{sync_id: origin}`` of the syncs that keep ``external_id``."""
        if not self.state._exists(self.table):
            return {}
        sql = f"SELECT sync_id, origin FROM {self.table} WHERE external_id = {self.state.p}"
        return {str(r[0]): str(r[1] or "") for r in self.state._query(sql, (external_id,))}

    def segment_of(self, sync_id: str) -> tuple[str, str] | None:
        """``(external_id, origin)`` of the segment ``sync_id`` keeps, or None."""
        if not self.state._exists(self.table):
            return None
        rows = self.state._query(
            f"SELECT external_id, origin FROM {self.table} WHERE sync_id = {self.state.p}", (sync_id,)
        )
        return (str(rows[0][0]), str(rows[0][1] or "")) if rows else None

    def record(self, sync_id: str, external_id: str, origin: str) -> None:
        """Record (or update) that ``sync_id`` keeps ``external_id``: ``creating``, ``created`` or ``adopted``."""
        p = self.state.p
        try:
            if self.segment_of(sync_id) is None:
                self.state._execute(
                    f"INSERT INTO {self.table} (sync_id, external_id, origin, recorded_at) VALUES ({p}, {p}, {p}, {p})",
                    (sync_id, external_id, origin, utcnow()),
                )
            else:
                self.state._execute(
                    f"UPDATE {self.table} SET origin = {p}, recorded_at = {p} WHERE sync_id = {p}",
                    (origin, utcnow(), sync_id),
                )
            self.state.conn.commit()
        except Exception:
            self.state.conn.rollback()
            raise


def ensure_segment(run: Run, spec: SegmentSpec) -> str:
    """Make sure the segment exists, is this sync's, and has the configured name; return what was done.

    ``created``, ``updated``, ``unchanged`` (``would create`` / ``would update`` in a dry run). Raises
    :class:`SyncConfigError` (nothing sent) when the segment is archived, belongs to someone else, or this sync
    kept another segment until now.
    """
    sync_id = run.options.sync_id
    registry = SegmentRegistry(run.state)
    mine = registry.segment_of(sync_id) if run.state_ready else None
    if mine is not None and mine[0] != spec.external_id:
        raise SyncConfigError(
            f"sync {sync_id!r} keeps segment {mine[0]!r}, and segment_external_id is now {spec.external_id!r}: its "
            "record of who it added belongs to the old segment. Nothing was sent. To fill a new segment, give the "
            "task a new sync_id (and archive the old segment in Attentive if it is no longer used)."
        )
    others = {s: o for s, o in (registry.owners(spec.external_id) if run.state_ready else {}).items() if s != sync_id}
    if others:
        raise SyncConfigError(
            f"segment {spec.external_id!r} is kept by another sync ({', '.join(sorted(others))}): two syncs on one "
            "segment would remove each other's members. Nothing was sent. Give this sync its own "
            "segment_external_id, or merge the two models into one sync."
        )
    found = run.sender.request(EndpointName.SEGMENT_READ, path_params={"externalId": spec.external_id}, max_attempts=3)
    if found.status == 404:
        if mine is not None and mine[1] in ("created", "adopted"):
            # Recreating it would leave this sync's record saying its members are in a segment that is empty.
            raise SyncConfigError(
                f"segment {spec.external_id!r}, which sync {sync_id!r} {mine[1]} and filled, is no longer in "
                "Attentive (archived or deleted). Nothing was sent. Its record of members belongs to the old "
                "segment: to fill a new one, give the task a new sync_id and a new segment_external_id."
            )
        return _create(run, registry, spec, known=mine is not None)
    if not found.ok:
        _fail(found, spec, "read")
    if mine is None:
        if not spec.adopt_existing:
            raise SyncConfigError(
                f"segment {spec.external_id!r} already exists in Attentive and was not created by sync {sync_id!r} "
                "(made in Attentive's UI, by another tool, or by a sync whose state tables are gone). Nothing was "
                "sent. Give this sync its own segment_external_id, or set adopt_existing_segment=True to take it "
                "over: people already in it stay, and a mirror only ever removes people this sync added."
            )
        if not run.options.dry_run:
            registry.ensure_table()  # a first run that adopts creates nothing else that would make it
            registry.record(sync_id, spec.external_id, "adopted")
    return _update(run, spec, found.body if isinstance(found.body, dict) else {})


def _create(run: Run, registry: SegmentRegistry, spec: SegmentSpec, *, known: bool) -> str:
    if run.options.dry_run:
        return "would create"
    sync_id = run.options.sync_id
    if not known:
        registry.ensure_table()
        # Before the create: a run killed between Attentive's 201 and this record would otherwise find "its"
        # segment foreign next time.
        registry.record(sync_id, spec.external_id, "creating")
    body: dict[str, Any] = {"externalId": spec.external_id, "name": spec.name.strip()}
    if spec.description is not None:
        body["description"] = spec.description.strip()
    created = run.sender.request(EndpointName.SEGMENT_CREATE, body, max_attempts=3)
    if created.status == 409:
        raise SyncConfigError(
            f"segment {spec.external_id!r} cannot be created: Attentive says the external id is taken "
            f"({created.error or 'HTTP 409'}). An archived segment keeps its external id for good. Nothing was "
            "sent. Choose another segment_external_id (for example with a version suffix)."
        )
    if not created.ok:
        _fail(created, spec, "create")
    registry.record(sync_id, spec.external_id, "created")
    run.log.info("created Attentive segment %r (%s)", spec.external_id, spec.name.strip())
    return "created"


def _update(run: Run, spec: SegmentSpec, segment: dict[str, Any]) -> str:
    changes: dict[str, str] = {}
    if segment.get("name") != spec.name.strip():
        changes["name"] = spec.name.strip()
    if spec.description is not None and segment.get("description") != spec.description.strip():
        changes["description"] = spec.description.strip()
    if not changes:
        return "unchanged"
    if run.options.dry_run:
        return "would update"
    result = run.sender.request(
        EndpointName.SEGMENT_UPDATE,
        changes,
        path_params={"externalId": spec.external_id},
        max_attempts=3,
    )
    if not result.ok:
        _fail(result, spec, "update")
    run.log.info("updated the %s of Attentive segment %r", " and ".join(sorted(changes)), spec.external_id)
    return "updated"


def _fail(result: Result, spec: SegmentSpec, action: str) -> None:
    scope = "segments:read" if action == "read" else "segments:write"
    if result.status == 401:
        raise AttentiveAuthError(f"Attentive refused the API key (HTTP 401) when asked to {action} the segment")
    if result.status == 403:
        raise SyncConfigError(
            f"the API key may not {action} segments (HTTP 403: {result.error or 'forbidden'}): give the custom app "
            f"the Segments permission ({scope}) in Attentive. Nothing was sent."
        )
    if result.status == 404:
        raise SyncConfigError(
            f"Attentive answered HTTP 404 to the segment {action} of {spec.external_id!r}: the account has no "
            "access to the v2 segments API (it is in beta); ask Attentive to enable it. Nothing was sent."
        )
    if result.status is not None and 400 <= result.status < 500:
        raise SyncConfigError(
            f"Attentive refused to {action} segment {spec.external_id!r} (HTTP {result.status}: "
            f"{result.error or 'no message'}). Nothing was sent."
        )
    raise AttentiveUnavailable(
        f"could not {action} segment {spec.external_id!r}: {result.error or 'no answer'} "
        f"(HTTP {result.status}); nothing was sent, a later try may succeed"
    )
