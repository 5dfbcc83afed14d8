"""Airflow glue shared by the three operators: templating, connections, context, XCom, assets.

The sync itself happens in :mod:`airflow_provider_attentive.sync`; this module only turns Airflow
connections into DB-API connections and a transport, and engine errors into task failures.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, closing
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import Asset, BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_attentive.client import AttentiveTransport, EndpointName
from airflow_provider_attentive.hooks.attentive import AttentiveHook
from airflow_provider_attentive.operators.lineage import AttentiveLineageMixin
from airflow_provider_attentive.sync.bulk import BulkJobDelivery
from airflow_provider_attentive.sync.delivery import Delivery
from airflow_provider_attentive.sync.engine import SyncEngine
from airflow_provider_attentive.sync.errors import (
    AttentiveAuthError,
    RunStopped,
    SourceDataError,
    SyncAborted,
    SyncConfigError,
    SyncConfigStop,
    SyncLockedError,
)
from airflow_provider_attentive.sync.objects import ObjectType
from airflow_provider_attentive.sync.options import SyncOptions
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.state import StateStore

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["AttentiveSyncOperator"]

# Summary entries that list rows (masked keys, payloads) rather than count them: kept out of asset events.
_SAMPLES = ("errors", "warning_samples", "samples", "would_send", "invalid_reasons")


class AttentiveSyncOperator(AttentiveLineageMixin, BaseOperator):
    """Base class: read a SQL model through any Airflow SQL connection and sync it to Attentive.

    :param sql: the model, one SELECT (templated; a path ending in ``.sql`` is read as a template file).
    :param sql_conn_id: any connection whose hook is a ``DbApiHook`` (sqlite, postgres, snowflake, ...).
    :param primary_key: a unique, non-null column of the model.
    :param mapping: ``{source_column: destination_field}``; ``None`` maps columns by name.
    :param attentive_conn_id: the ``attentive`` connection.
    :param state_conn_id: where the sync state tables live; ``None`` = ``sql_conn_id``.
    :param default_region: region for national phone formats (e.g. ``"US"``); ``None`` = E.164 only.
    :param dry_run: classify and report, but send nothing and write nothing.
    :param max_failed_ratio: fail the task when more than this share of rows is invalid, or of sends failed.
    :param parameters: bind parameters for ``sql``.
    :param sql_hook_params: extra keyword arguments for the SQL hook.
    :param sync_id: name of the sync's state; defaults to ``<dag_id>.<task_id>``.
    :param state_table_prefix: prefix of the state tables (``attentive_`` -> ``attentive_sync_state``...).
    :param state_schema: schema of the state tables.
    :param allow_sensitive_columns: columns that look like SSNs, card numbers or health data but are not.
    :param resend_in_doubt: send again rows an interrupted run may or may not have delivered.
    :param max_rows_per_run: stop sending after this many requests; the rest goes out next run.
    :param max_runtime: stop sending after this long (seconds or timedelta); the rest goes out next run.
    :param lock_wait: how long to wait (seconds) for another run of the same sync before failing.
    :param lock_ttl: seconds after which the lock of a run that stopped refreshing it (a killed worker) expires;
        a live run refreshes it before every batch, so keep this below the task's ``retry_delay``.
    :param check_primary_key: check NULL/duplicate keys in the warehouse before sending (recommended).
    :param chunk_size: rows fetched per ``fetchmany``.
    :param batch_size: rows per write-ahead batch: bounds how many rows can be in doubt after a crash.
    :param emit_asset: add an outlet ``Asset("attentive://<object>/<sync_id>")`` whose event carries the counts.
    :param log_retention_days: delete this sync's row-log entries older than this; ``None`` keeps them.
    """

    object_type: ClassVar[str] = ""
    mode_default: ClassVar[str] = ""
    #: the parameter the asset's URI is named after (for the message when it is templated)
    asset_key_field: ClassVar[str] = "sync_id"
    # Operators that send bulk jobs set these from their own parameters (see after_run).
    deferrable: bool = False
    bulk_wait: float = 0.0
    bulk_poll_interval: float = 30.0
    template_fields: Sequence[str] = ("sql", "parameters", "sync_id", "mapping")
    template_ext: Sequence[str] = (".sql", ".jinja", ".j2")
    template_fields_renderers: ClassVar[dict[str, str]] = {"sql": "sql", "parameters": "json", "mapping": "json"}
    ui_color = "#ffd8c2"

    def __init__(
        self,
        *,
        sql: str,
        sql_conn_id: str,
        primary_key: str,
        mapping: Mapping[str, str] | None = None,
        attentive_conn_id: str = AttentiveHook.default_conn_name,
        state_conn_id: str | None = None,
        default_region: str | None = None,
        dry_run: bool = False,
        max_failed_ratio: float = 0.1,
        parameters: Sequence[Any] | Mapping[str, Any] | None = None,
        sql_hook_params: Mapping[str, Any] | None = None,
        sync_id: str | None = None,
        state_table_prefix: str = "attentive_",
        state_schema: str | None = None,
        allow_sensitive_columns: Sequence[str] = (),
        resend_in_doubt: bool = False,
        max_rows_per_run: int | None = None,
        max_runtime: float | dt.timedelta | None = None,
        lock_wait: float = 60.0,
        lock_ttl: float = 300.0,
        check_primary_key: bool = True,
        chunk_size: int = 1000,
        batch_size: int = 100,
        emit_asset: bool = False,
        log_retention_days: int | None = 30,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.primary_key = primary_key
        self.mapping = dict(mapping) if mapping is not None else None
        self.attentive_conn_id = attentive_conn_id
        self.state_conn_id = state_conn_id
        self.default_region = default_region
        # The public name; it shadows BaseOperator.dry_run(), a template-rendering helper that
        # Airflow 3 itself never calls.
        self.dry_run = dry_run  # type: ignore[method-assign,assignment]
        self.max_failed_ratio = max_failed_ratio
        self.parameters = parameters
        self.sql_hook_params = dict(sql_hook_params or {})
        self.sync_id = sync_id or f"{self.dag_id}.{self.task_id}"
        self._sync_id_given = bool(sync_id)
        self.state_table_prefix = state_table_prefix
        self.state_schema = state_schema
        self.allow_sensitive_columns = list(allow_sensitive_columns)
        self.resend_in_doubt = resend_in_doubt
        self.max_rows_per_run = max_rows_per_run
        self.max_runtime = max_runtime.total_seconds() if isinstance(max_runtime, dt.timedelta) else max_runtime
        self.lock_wait = lock_wait
        self.lock_ttl = lock_ttl
        self.check_primary_key = check_primary_key
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self.log_retention_days = log_retention_days
        self.emit_asset = emit_asset
        if emit_asset:
            uri = self.asset_uri()
            if "{{" in uri or "{%" in uri:
                # Outlets are declared when the DAG is parsed, before templates render: the run's asset event
                # would go to another asset than the one downstream DAGs schedule on.
                raise ValueError(
                    f"emit_asset=True needs the asset's name when the DAG is parsed, but {uri!r} is templated: give "
                    f"a literal {self.asset_key_field}, or leave emit_asset off and declare outlets=[Asset(...)]"
                )
            self.outlets = [*self.outlets, self.asset]

    def asset_uri(self) -> str:
        """The URI of the asset a completed sync updates: ``attentive://<object>/<sync_id>``."""
        return f"attentive://{self.object_type}/{self.sync_id}"

    @property
    def asset(self) -> Asset:
        """The asset a completed sync updates (see :meth:`asset_uri`)."""
        uri = self.asset_uri()
        # Named after its URI so that a downstream DAG can schedule on Asset("attentive://...") as written.
        return Asset(name=uri, uri=uri)

    # -- hooks for subclasses --------------------------------------------------------------------------------

    def build_object(self) -> ObjectType:
        """Return the configured object type (attributes, events or subscriptions)."""
        raise NotImplementedError

    def build_delivery(self, transport: AttentiveTransport, *, resumed: bool) -> Delivery | None:
        """How this operator's rows reach Attentive; None is one request per row. Called before the model is
        read (so a check here fails before anything is sent); ``resumed`` after a deferral."""
        return None

    def after_run(self, context: Context, engine: SyncEngine, summary: dict[str, Any]) -> None:
        """Called after a successful run (not after a resumed one).

        An operator with ``deferrable=True`` whose run submitted bulk jobs that are still open defers here: the
        triggerer polls them for up to ``bulk_wait`` seconds, holding no worker slot, and :meth:`execute_complete`
        runs the sync again, which first records what the jobs answered.
        """
        delivery = engine.delivery
        if not self.deferrable or not isinstance(delivery, BulkJobDelivery) or not delivery.submitted_jobs:
            return
        from airflow_provider_attentive.triggers.bulk_job import AttentiveBulkJobTrigger

        open_jobs = set(delivery.pending_job_ids())
        job_ids = [job for job in delivery.submitted_jobs if job in open_jobs]
        if not job_ids or self.bulk_wait <= 0:
            return
        self.log.info(
            "deferring: waiting up to %.0f s for %d bulk job(s) in the triggerer", self.bulk_wait, len(job_ids)
        )
        self.defer(
            trigger=AttentiveBulkJobTrigger(
                attentive_conn_id=self.attentive_conn_id,
                job_ids=job_ids,
                deadline=time.time() + self.bulk_wait,
                poll_interval=self.bulk_poll_interval,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after a deferral: run the sync again, which first records what the awaited jobs answered."""
        status = (event or {}).get("status")
        if status == "error":
            self.log.warning("waiting for the bulk jobs ended with an error: %s", (event or {}).get("message"))
        return self._sync(context, resumed=True)

    def sync_options(self) -> dict[str, Any]:
        """Extra :class:`SyncOptions` fields for this operator."""
        return {}

    # -- execution -------------------------------------------------------------------------------------------

    def _db_hook(self, conn_id: str) -> DbApiHook:
        hook = BaseHook.get_connection(conn_id).get_hook(hook_params=self.sql_hook_params or None)
        if not isinstance(hook, DbApiHook):
            raise AirflowFailException(
                f"connection {conn_id!r} has hook {type(hook).__name__}, which is not a SQL (DbApiHook) connection"
            )
        return hook

    def execute(self, context: Context) -> dict[str, Any]:
        return self._sync(context, resumed=False)

    def _sync(self, context: Context, *, resumed: bool) -> dict[str, Any]:
        ti = context.get("ti")
        map_index = getattr(ti, "map_index", -1)
        if isinstance(map_index, int) and map_index >= 0 and self._sync_id_shared_by_mapped_instances():
            # Every mapped instance would share <dag_id>.<task_id>: one state for several models, so each
            # mirror would unsubscribe the others' members. A map index is no name either: it shifts when the
            # expanded list changes.
            raise AirflowFailException(
                f"{self.task_id} is a mapped task: give each mapped instance its own sync_id, e.g. "
                ".partial(...).expand_kwargs([{'sql': ..., 'sync_id': 'vip_list'}, ...]); nothing was sent"
            )
        run_id = str(context.get("run_id") or getattr(context.get("dag_run"), "run_id", "manual"))
        try_number = getattr(ti, "try_number", None)
        engine_run_id = f"{run_id}#{try_number}" if try_number else run_id
        source_hook = self._db_hook(self.sql_conn_id)
        self._lineage_sql_hook = source_hook  # the OpenLineage methods run after execute, on this object
        state_id = self.state_conn_id or self.sql_conn_id
        state_hook = source_hook if state_id == self.sql_conn_id else self._db_hook(state_id)
        try:
            obj = self.build_object()
            settings: dict[str, Any] = {
                "sync_id": self.sync_id,
                "run_id": engine_run_id,
                "mode": self.mode_default,
                "dry_run": self.dry_run,
                "max_failed_ratio": self.max_failed_ratio,
                "chunk_size": self.chunk_size,
                "batch_size": self.batch_size,
                "resend_in_doubt": self.resend_in_doubt,
                "max_rows_per_run": self.max_rows_per_run,
                "max_runtime_s": self.max_runtime,
                "lock_wait_s": self.lock_wait,
                "lock_ttl_s": self.lock_ttl,
                "check_primary_key": self.check_primary_key,
                "log_retention_days": self.log_retention_days,
            }
            settings.update(self.sync_options())  # subclasses add (or override) their own options
            options = SyncOptions(**settings)
        except SyncConfigError as exc:
            raise AirflowFailException(f"Attentive sync {self.sync_id!r} is misconfigured: {exc}") from None
        attentive = AttentiveHook(attentive_conn_id=self.attentive_conn_id)
        self._lineage_api_hook = attentive
        try:
            transport = attentive.get_conn()
        except ValueError as exc:  # the connection itself is wrong (no key, bad URL, bad extra): no retry helps
            raise AirflowFailException(str(exc)) from None
        try:
            self._check_key(transport)
            delivery = self.build_delivery(transport, resumed=resumed)
        except BaseException:
            attentive.close()
            raise
        with ExitStack() as stack:
            source_conn = stack.enter_context(closing(source_hook.get_conn()))
            if state_hook is source_hook and _single_connection(source_hook):
                # SQLite: a second connection to the same file would deadlock against the open read cursor.
                state_conn = source_conn
            else:
                state_conn = stack.enter_context(closing(state_hook.get_conn()))
            stack.callback(attentive.close)
            engine = SyncEngine(
                obj,
                options,
                source=SqlSource(
                    source_conn,
                    self.sql,
                    self.parameters,  # type: ignore[arg-type]
                    chunk_size=self.chunk_size,
                    convert=_converter(source_hook),
                ),
                state=StateStore(
                    state_conn,
                    placeholder=state_hook.placeholder,
                    table_prefix=self.state_table_prefix,
                    schema=self.state_schema,
                ),
                sender=transport,
                delivery=delivery,
                log=self.log,  # type: ignore[arg-type]
            )
            try:
                summary = engine.run()
            except (AttentiveAuthError, SyncConfigStop) as exc:
                # A retry with the same key gets the same 401/403; the rows wait, as failed, for the next run.
                self._publish(context, exc.summary)
                raise AirflowFailException(f"Attentive sync {self.sync_id!r} stopped: {exc}") from None
            except RunStopped as exc:  # too many failures, or Attentive unavailable: a later try may succeed
                self._publish(context, exc.summary)
                raise AirflowException(str(exc)) from None
            except (SyncConfigError, SourceDataError, SyncAborted) as exc:
                # A retry cannot fix configuration, bad keys or a tripped guard: fail without retrying. The
                # summary still goes out (blocked_removals, say) for callbacks and alerting.
                self._publish(context, engine.partial_summary())
                raise AirflowFailException(f"Attentive sync {self.sync_id!r} stopped: {exc}") from None
            except SyncLockedError as exc:
                raise AirflowException(str(exc)) from None
            self._publish(context, summary)
            if not resumed:
                self.after_run(context, engine, summary)  # may defer (the connections close first)
        return summary

    def _check_key(self, transport: AttentiveTransport) -> None:
        """One ``GET /v1/me`` (no scope needed) before the model is read, dry runs included.

        A refused key otherwise shows only when the first batches come back 401, after their intents were
        written. Only a 401 decides anything: an unreachable or failing Attentive is left to the run, whose own
        breaker stops it (and lets the task retry), so a check that got no answer never fails the task for good.
        """
        try:
            result = transport.request(EndpointName.ME, max_attempts=2)
        except Exception as exc:
            self.log.warning("could not check the Attentive API key before sending (%s); going on", type(exc).__name__)
            return
        if result.ok:
            return
        if result.status == 401:
            detail, key = result.error or "Unauthorized", transport.config.api_key
            if key:  # the transport's messages never carry the key; this keeps it so if one ever quotes a header
                detail = detail.replace(key, "***")
            raise AirflowFailException(
                f"Attentive sync {self.sync_id!r} stopped before reading or sending anything: Attentive refused the "
                f"API key of connection {self.attentive_conn_id!r} (HTTP 401 on GET /v1/me: {detail}). Fix the key "
                "in the connection, or create a new one in Attentive's custom app settings."
            )
        self.log.warning(
            "could not check the Attentive API key before sending (GET /v1/me answered %s); going on",
            result.status if result.status is not None else (result.error or "nothing"),
        )

    def _sync_id_shared_by_mapped_instances(self) -> bool:
        """True when every instance of this mapped task gets the same sync_id: the default, or a plain string
        given to ``.partial()``. A sync_id from ``.expand()``, or a template, can differ per instance."""
        if not self._sync_id_given:
            return True
        mapped = self.dag.task_dict.get(self.task_id) if self.has_dag() else None
        partial = getattr(mapped, "partial_kwargs", None)
        value = partial.get("sync_id") if isinstance(partial, Mapping) else None
        return isinstance(value, str) and "{{" not in value

    def _publish(self, context: Context, summary: dict[str, Any]) -> None:
        """Make the counts visible: the ``summary`` XCom (also on failure), the asset event's extra, lineage."""
        self._report_lineage(summary)
        ti = context.get("ti")
        if ti is not None and hasattr(ti, "xcom_push"):
            ti.xcom_push(key="summary", value=summary)
        if self.emit_asset and not summary.get("dry_run"):
            outlet_events = context.get("outlet_events")
            if outlet_events is not None:
                # Every count of the summary; the error samples and dry-run lists stay in the XCom only.
                counts = {k: v for k, v in summary.items() if k not in _SAMPLES}
                outlet_events[self.asset].extra = counts


def _single_connection(hook: DbApiHook) -> bool:
    return getattr(hook, "conn_type", None) == "sqlite" or type(hook).__name__ == "SqliteHook"


def _converter(hook: DbApiHook) -> Any:
    """Only drivers whose rows are not plain tuples override this; skip the call for everyone else."""
    if type(hook)._make_common_data_structure is DbApiHook._make_common_data_structure:
        return None
    return hook._make_common_data_structure
