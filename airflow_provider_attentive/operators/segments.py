"""AttentiveSegmentsOperator: a warehouse audience as an Attentive segment (Add / Remove / Mirror), texting no one."""

from __future__ import annotations

from typing import Any

from airflow_provider_attentive.assets import destination_name
from airflow_provider_attentive.client import AttentiveTransport
from airflow_provider_attentive.operators.base import AttentiveSyncOperator
from airflow_provider_attentive.sync.delivery import Delivery
from airflow_provider_attentive.sync.errors import SyncConfigError
from airflow_provider_attentive.sync.objects import ObjectType
from airflow_provider_attentive.sync.objects.segments import SegmentMembersDelivery, SegmentSpec, SegmentsType
from airflow_provider_attentive.sync.objects.segments.members import MAX_MEMBERS


class AttentiveSegmentsOperator(AttentiveSyncOperator):
    """Keep an Attentive segment equal to (``mirror``), or fed by (``add``), or emptied by (``remove``) a SQL model.

    Segment membership sends nobody a message: campaigns and journeys target the segment. The segment is found
    by ``segment_external_id`` and created when missing; members go out through Attentive's v2 bulk member jobs
    (up to ``member_batch_size`` a request), identified by every mapped identifier (``phone``, ``email``,
    ``client_user_id``). Jobs complete within hours (Attentive's own targets): their outcome is read from the
    job's results, in this run (``bulk_wait``), in the triggerer (``deferrable``), or by the next run. See
    :class:`AttentiveSyncOperator` for the shared parameters and ``docs/segments.md`` for the details.

    :param segment_external_id: the segment's external id (1-255 characters); created if it does not exist. A
        segment with this id that this sync did not create is an error unless ``adopt_existing_segment``.
    :param segment_name: the segment's name in Attentive (1-240 characters), kept in sync.
    :param segment_description: its description (2-500 characters), kept in sync; ``None`` leaves it alone.
    :param mode: ``"add"``, ``"remove"`` or ``"mirror"`` (required). A mirror only ever removes people it added.
    :param max_removals: an ``int`` count or a ``float`` share of tracked members; a mirror that would remove
        more fails before sending anything.
    :param allow_empty_source: let a mirror of an empty model go ahead (``max_removals`` still applies).
    :param member_batch_size: members per request (1-10,000).
    :param deferrable: after submitting, wait for the jobs in the triggerer, holding no worker slot.
    :param bulk_wait: seconds to wait for the jobs (in the worker, or deferred); jobs unfinished by then are
        reconciled by the next run, and their rows are neither resent nor counted as done meanwhile.
    :param bulk_poll_interval: seconds between job-status reads while waiting.
    :param adopt_existing_segment: take over a segment this sync did not create (people already in it stay).
    """

    object_type = "segments"
    asset_key_field = "segment_external_id"
    template_fields = (
        *AttentiveSyncOperator.template_fields,
        "segment_external_id",
        "segment_name",
        "segment_description",
    )

    def __init__(
        self,
        *,
        segment_external_id: str,
        segment_name: str,
        mode: str,  # required: whether people are added, removed or both is never a default
        segment_description: str | None = None,
        max_removals: int | float = 0.2,
        allow_empty_source: bool = False,
        member_batch_size: int = MAX_MEMBERS,
        deferrable: bool = False,
        bulk_wait: float = 600.0,
        bulk_poll_interval: float = 30.0,
        adopt_existing_segment: bool = False,
        **kwargs: Any,
    ) -> None:
        if mode not in SegmentsType.modes:
            raise ValueError(f"mode must be one of {SegmentsType.modes}, got {mode!r}")
        if (
            isinstance(member_batch_size, bool)
            or not isinstance(member_batch_size, int)
            or not 1 <= member_batch_size <= MAX_MEMBERS
        ):
            raise ValueError(f"member_batch_size must be an integer from 1 to {MAX_MEMBERS}, got {member_batch_size!r}")
        if not bulk_wait >= 0 or not bulk_poll_interval > 0:
            raise ValueError("bulk_wait must be >= 0 and bulk_poll_interval > 0 (seconds)")
        # Set before the base class runs: its emit_asset outlet is named after the segment.
        self.segment_external_id = segment_external_id
        self.segment_name = segment_name
        self.segment_description = segment_description
        self.adopt_existing_segment = adopt_existing_segment
        super().__init__(**kwargs)
        if "{{" not in f"{segment_external_id}{segment_name}{segment_description or ''}":
            # A broken segment configuration fails when the DAG is parsed, not at run time. A templated one is
            # checked once rendered, in build_object, where it fails the task without a retry.
            try:
                self._spec()
            except SyncConfigError as exc:
                raise ValueError(str(exc)) from None
        self.mode = mode
        self.max_removals = max_removals
        self.allow_empty_source = allow_empty_source
        self.member_batch_size = member_batch_size
        self.deferrable = deferrable
        self.bulk_wait = float(bulk_wait)
        self.bulk_poll_interval = float(bulk_poll_interval)

    @property
    def mode_default(self) -> str:  # type: ignore[override]
        return self.mode

    def asset_uri(self) -> str:
        """``attentive://segments/<external_id>``: one segment, whichever sync fills it."""
        return f"attentive://segments/{self.segment_external_id}"

    def openlineage_destination(self) -> str:
        return destination_name("segments", self.segment_external_id)

    def _spec(self) -> SegmentSpec:
        """The segment as configured; a SyncConfigError, which a run reports as a misconfigured sync."""
        return SegmentSpec(
            external_id=self.segment_external_id,
            name=self.segment_name,
            description=self.segment_description,
            adopt_existing=self.adopt_existing_segment,
        )

    def build_object(self) -> ObjectType:
        return SegmentsType(
            segment=self._spec(),
            primary_key=self.primary_key,
            mapping=self.mapping,
            default_region=self.default_region,
            allow_sensitive=self.allow_sensitive_columns,
        )

    def build_delivery(self, transport: AttentiveTransport, *, resumed: bool) -> Delivery | None:
        # Deferred, the triggerer waits; resumed, the jobs are done (or the wait is over): the worker never polls.
        wait = 0.0 if (self.deferrable or resumed) else self.bulk_wait
        return SegmentMembersDelivery(
            transport,
            external_id=self.segment_external_id,
            batch_size=self.member_batch_size,
            wait_s=wait,
            poll_interval_s=min(self.bulk_poll_interval, 1.0),
            allow_insecure_http=transport.config.allow_insecure_http,
            proxy=transport.config.proxy,
        )

    def sync_options(self) -> dict[str, Any]:
        return {"max_removals": self.max_removals, "allow_empty_source": self.allow_empty_source}
