"""AttentiveAttributesOperator: warehouse rows to subscriber custom attributes (Upsert), per row or in bulk jobs."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_attentive.assets import destination_name
from airflow_provider_attentive.client import AttentiveTransport, EndpointName
from airflow_provider_attentive.operators.base import AttentiveSyncOperator
from airflow_provider_attentive.sync.delivery import Delivery
from airflow_provider_attentive.sync.objects import AttributesType, ObjectType
from airflow_provider_attentive.sync.objects.attributes import BulkAttributesDelivery, BulkMode


class AttentiveAttributesOperator(AttentiveSyncOperator):
    """Upsert custom attributes (loyalty tier, lifetime value, ...) onto Attentive subscriber profiles.

    Through v1, each row becomes one ``POST /v1/attributes/custom`` with ``{"user": {...}, "properties": {...}}``.
    Through Attentive's v2 bulk jobs, up to 256 rows become one ``POST /v2/bulk/user/attributes``, whose
    outcomes arrive later in a results file. Destination fields ``phone``, ``email`` and ``client_user_id``
    identify the subscriber; every other mapped field is an attribute sent under its destination name. Only rows
    that are new, changed since Attentive last accepted them, or failed last time are sent. See
    :class:`AttentiveSyncOperator` for the shared parameters.

    :param bulk: ``True`` (v2 bulk jobs; fails before reading the model when the key cannot use them),
        ``False`` (v1, one request per row) or ``"auto"``: bulk when this run has at least ``bulk_threshold``
        rows to send, falling back to v1 (said in the log and the summary's ``bulk_fallback``) when the key
        cannot use bulk jobs.
    :param bulk_threshold: in ``"auto"``, the rows to send from which bulk jobs are used. Below it v1 lands
        sooner: bulk jobs complete within hours (Attentive's own targets). ``"auto"`` holds up to this many
        prepared rows in memory before it decides.
    :param bulk_batch_size: users per bulk request (1-256).
    :param deferrable: after submitting, wait for the jobs in the triggerer, holding no worker slot.
    :param bulk_wait: seconds to wait for the jobs (in the worker, or deferred); jobs unfinished by then are
        reconciled by the next run, and their rows are neither resent nor counted as done meanwhile.
    :param bulk_poll_interval: seconds between job-status reads while waiting (the first pause in the worker,
        which then doubles up to 30 s).
    """

    object_type = "attributes"
    mode_default = "upsert"

    def __init__(
        self,
        *,
        bulk: BulkMode = "auto",
        bulk_threshold: int = 100_000,
        bulk_batch_size: int = 256,
        deferrable: bool = False,
        bulk_wait: float = 600.0,
        bulk_poll_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not (bulk is True or bulk is False or bulk == "auto"):
            raise ValueError(f"bulk must be True, False or 'auto', got {bulk!r}")
        if isinstance(bulk_batch_size, bool) or not isinstance(bulk_batch_size, int) or not 1 <= bulk_batch_size <= 256:
            raise ValueError(f"bulk_batch_size must be an integer from 1 to 256, got {bulk_batch_size!r}")
        if isinstance(bulk_threshold, bool) or not isinstance(bulk_threshold, int) or bulk_threshold < 0:
            raise ValueError(f"bulk_threshold must be a non-negative integer, got {bulk_threshold!r}")
        if not bulk_wait >= 0 or not bulk_poll_interval > 0:
            raise ValueError("bulk_wait must be >= 0 and bulk_poll_interval > 0 (seconds)")
        self.bulk = bulk
        self.bulk_threshold = bulk_threshold
        self.bulk_batch_size = bulk_batch_size
        self.deferrable = deferrable
        self.bulk_wait = float(bulk_wait)
        self.bulk_poll_interval = float(bulk_poll_interval)

    def openlineage_destination(self) -> str:
        # One set of custom attributes per subscriber profile, written by every attributes sync alike.
        return destination_name(self.object_type)

    def build_object(self) -> ObjectType:
        return AttributesType(
            primary_key=self.primary_key,
            mapping=self.mapping,
            default_region=self.default_region,
            allow_sensitive=self.allow_sensitive_columns,
        )

    def build_delivery(self, transport: AttentiveTransport, *, resumed: bool) -> Delivery | None:
        if self.bulk is True and not resumed and not bool(self.dry_run):  # dry_run shadows a method
            self._check_bulk_access(transport)
        # Deferred, the triggerer waits; resumed, the jobs are done (or the wait is over): the worker never polls.
        wait = 0.0 if (self.deferrable or resumed) else self.bulk_wait
        return BulkAttributesDelivery(
            transport,
            mode=self.bulk,
            threshold=self.bulk_threshold,
            batch_size=self.bulk_batch_size,
            wait_s=wait,
            poll_interval_s=min(self.bulk_poll_interval, 1.0),
            allow_insecure_http=transport.config.allow_insecure_http,
            proxy=transport.config.proxy,
        )

    def _check_bulk_access(self, transport: AttentiveTransport) -> None:
        """With ``bulk=True``, find out before the model is read whether the key may submit bulk jobs.

        An empty submission writes nothing: Attentive checks the key and its scopes before the body, so a 400
        (the body needs at least one user) means the endpoint is open to this key (see docs/bulk-jobs.md).
        """
        result = transport.request(EndpointName.BULK, {"users": []}, max_attempts=2)
        if result.status == 403:
            raise AirflowFailException(
                f"Attentive sync {self.sync_id!r} stopped before reading the model: the API key may not submit bulk "
                "attribute jobs (HTTP 403). Give the custom app Custom Attributes and Subscribers write access "
                "(attributes:write and subscriptions:write), or set bulk='auto' or bulk=False to use v1."
            )
        if result.status == 404:
            raise AirflowFailException(
                f"Attentive sync {self.sync_id!r} stopped before reading the model: this account has no access to "
                "Attentive's v2 bulk jobs (HTTP 404; they are in beta). Ask Attentive to enable them, or set "
                "bulk='auto' or bulk=False to use v1."
            )
        if result.status == 401:
            raise AirflowFailException(
                f"Attentive sync {self.sync_id!r} stopped before reading the model: Attentive refused the API key "
                f"of connection {self.attentive_conn_id!r} (HTTP 401)."
            )
