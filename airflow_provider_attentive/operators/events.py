"""AttentiveEventsOperator: one custom event per primary key, sent once, ever."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_attentive.assets import destination_name
from airflow_provider_attentive.operators.base import AttentiveSyncOperator
from airflow_provider_attentive.sync.objects import EventsType, ObjectType

if TYPE_CHECKING:
    from airflow.sdk import Context


class AttentiveEventsOperator(AttentiveSyncOperator):
    """Send custom events (Insert) that trigger Attentive journeys and feed segments.

    A primary key already delivered is never sent again: across reruns, retries, cleared tasks and
    overlapping backfills. Each event carries an ``externalEventId`` derived from the sync id and the key,
    so a resend is recognisably the same event. Events older than 12 hours are sent (they feed segments)
    but counted as ``stale`` because they will not trigger journeys; ``skip_stale=True`` drops them.

    :param event_type: a static event type (case-sensitive); or map a column to ``type``.
    :param skip_stale: do not send events whose timestamp is older than 12 hours.
    """

    object_type = "events"
    mode_default = "insert"
    template_fields = (*AttentiveSyncOperator.template_fields, "event_type")

    def __init__(self, *, event_type: str | None = None, skip_stale: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.event_type = event_type
        self.skip_stale = skip_stale

    def openlineage_destination(self) -> str:
        # Journeys and segments key on the event type; a type taken from a column leaves the sync as the name.
        return destination_name(self.object_type, self.event_type or self.sync_id)

    def build_object(self) -> ObjectType:
        return EventsType(
            sync_id=self.sync_id,
            event_type=self.event_type,
            skip_stale=self.skip_stale,
            primary_key=self.primary_key,
            mapping=self.mapping,
            default_region=self.default_region,
            allow_sensitive=self.allow_sensitive_columns,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        summary = super().execute(context)
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if not summary["rows_read"] and start is not None and start == end:
            # Airflow 3's cron schedules run with an empty data interval (start == end): a model filtered on
            # it selects nothing, run after run, and every task succeeds.
            self.log.warning(
                "the model returned no rows and this run's data interval is empty (data_interval_start == "
                "data_interval_end == %s). If the sql filters on the data interval, schedule the DAG with "
                "CronDataIntervalTimetable (or another interval timetable) so each run covers a real interval.",
                start,
            )
        return summary
