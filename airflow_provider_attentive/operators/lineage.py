"""OpenLineage for the sync operators: the warehouse tables a model reads in, one Attentive destination out.

:class:`AttentiveLineageMixin` gives every sync operator the methods the OpenLineage provider calls
(``get_openlineage_facets_on_start/complete/failure``). Everything OpenLineage is imported inside them, so
the provider installs and runs without ``apache-airflow-providers-openlineage``; with it, each task run
emits:

* inputs: the tables the model reads, parsed by the OpenLineage ``SQLParser`` with the SQL hook's dialect,
  namespace and default schema (hooks without OpenLineage support, such as SQLite, get a namespace from
  their connection), with the columns the model reads when the database or the parser tells them;
* one output: the Attentive destination, namespace ``attentive://<API host>``, name from
  :meth:`AttentiveLineageMixin.openlineage_destination` (``attributes``, ``events/<type>``,
  ``subscriptions/<sync_id>``), with the destination fields and which warehouse columns feed them;
* on complete or failure: the run's counts in an ``attentiveSync`` run facet, the rows sent as the
  output's ``outputStatistics``, and on failure an ``errorMessage`` run facet.

A dry run reads but writes nothing, so it reports no output. While the task runs, the streaming read and
the destination also go to Airflow's hook lineage collector, since the raw ``fetchmany`` cursor bypasses
the report ``DbApiHook.run`` makes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_attentive.assets import DEFAULT_API_HOST, SCHEME, destination_name, namespace
from airflow_provider_attentive.get_provider_info import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.providers.openlineage.sqlparser import DatabaseInfo
    from airflow.sdk import BaseHook, Connection
    from openlineage.client.event_v2 import Dataset, OutputDataset

__all__ = [
    "RUN_FACET",
    "AttentiveLineageMixin",
    "ModelLineage",
    "api_host",
    "destination_dataset",
    "model_lineage",
    "run_facets",
    "sync_counts",
]

log = logging.getLogger(__name__)

#: Key of the custom run facet that carries a sync's counts.
RUN_FACET = "attentiveSync"
_FACET_SCHEMA_URL = (
    "https://github.com/airflow-provider-attentive/airflow-provider-attentive/blob/main/README.md#lineage"
)
# Hooks without OpenLineage support fall back to the base DbApiHook's "public", which SQLite does not have.
_DEFAULT_SCHEMAS = {"sqlite": "main"}
_DIALECTS = frozenset(
    {"bigquery", "databricks", "hive", "mssql", "mysql", "postgres", "redshift", "snowflake", "sqlite"}
)


def sync_counts(summary: Mapping[str, Any]) -> dict[str, int]:
    """The counts a catalogue shows for one run: rows read, sent (accepted), failed, rejected, invalid..."""

    def total(key: str) -> int:
        value = summary.get(key) or 0
        return sum(value.values()) if isinstance(value, Mapping) else int(value)

    return {
        "rowsRead": total("rows_read"),
        "sent": total("succeeded"),
        "failed": total("failed"),
        "rejected": total("rejected"),
        "invalid": total("invalid"),
        "inDoubt": total("in_doubt"),
        "unchanged": total("unchanged"),
        "remaining": total("remaining"),
    }


@functools.cache
def _run_facet_class() -> Any:
    """The ``attentiveSync`` facet class, built on first use so that importing this module needs no OpenLineage."""
    from openlineage.client.facet_v2 import RunFacet

    class AttentiveSyncRunFacet(RunFacet):
        """One sync run: which sync, and what became of the rows it read (fields: see :func:`run_facets`)."""

        @staticmethod
        def _get_schema() -> str:
            return _FACET_SCHEMA_URL

    return AttentiveSyncRunFacet


def run_facets(summary: Mapping[str, Any] | None, error: BaseException | str | None = None) -> dict[str, Any]:
    """Run facets for a finished run: ``attentiveSync`` (the counts) and, when it failed, ``errorMessage``.

    ``attentiveSync`` has ``syncId``, ``objectType``, ``mode``, ``dryRun`` and the counts of
    :func:`sync_counts` (camelCase, as OpenLineage's own facets are).
    """
    facets: dict[str, Any] = {}
    if summary:
        facets[RUN_FACET] = _run_facet_class()().with_additional_properties(
            syncId=str(summary.get("sync_id", "")),
            objectType=str(summary.get("object_type", "")),
            mode=str(summary.get("mode", "")),
            dryRun=bool(summary.get("dry_run")),
            **sync_counts(summary),
        )
    if error is not None:
        from openlineage.client.facet_v2 import error_message_run

        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=str(error), programmingLanguage="python"
        )
    return facets


def api_host(base_url: str | None, port: int | None = None) -> str:
    """``host[:port]`` of an Attentive base URL (a connection's host), without user info or a default port."""
    base = (base_url or "").strip() or DEFAULT_BASE_URL
    parsed = urllib.parse.urlsplit(base if "://" in base else f"https://{base}")
    host = parsed.hostname or DEFAULT_API_HOST
    if ":" in host:  # IPv6
        host = f"[{host}]"
    with contextlib.suppress(ValueError):  # a port that is no number: the hook rejects such a URL anyway
        port = parsed.port or port
    default_port = {"https": 443, "http": 80}.get(parsed.scheme)
    return f"{host}:{port}" if port and port != default_port else host


@dataclass
class ModelLineage:
    """What the model reads: input datasets, the SQL facets, and the table columns behind each model column."""

    namespace: str
    inputs: list[Dataset] = field(default_factory=list)
    run_facets: dict[str, Any] = field(default_factory=dict)
    job_facets: dict[str, Any] = field(default_factory=dict)
    #: model column -> [(input dataset name, table column)], as far as the parser traced it
    columns: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def _fallback_database_info(connection: Connection) -> DatabaseInfo:
    """Namespace ``<conn_type>://<host[:port]>`` for a hook that has no OpenLineage support of its own."""
    from airflow.providers.openlineage.sqlparser import DatabaseInfo

    host = connection.host or ""
    authority = f"{host}:{connection.port}" if host and connection.port else host
    return DatabaseInfo(scheme=connection.conn_type or "sql", authority=authority or None)


def model_lineage(hook: DbApiHook, sql: str) -> ModelLineage:
    """Parse ``sql`` as the OpenLineage provider's SQL operators do, for ``hook``'s database."""
    from airflow.providers.openlineage.sqlparser import SQLParser, from_table_meta

    connection = hook.get_connection(getattr(hook, hook.conn_name_attr))
    try:
        database_info = hook.get_openlineage_database_info(connection)
    except AttributeError:  # common-sql too old to know OpenLineage
        database_info = None
    supported = database_info is not None
    if database_info is not None:
        dialect = hook.get_openlineage_database_dialect(connection)
        default_schema = hook.get_openlineage_default_schema()
    else:
        database_info = _fallback_database_info(connection)
        conn_type = (connection.conn_type or "").lower()
        dialect = conn_type if conn_type in _DIALECTS else "generic"
        default_schema = _DEFAULT_SCHEMAS.get(conn_type) or hook.get_openlineage_default_schema()
    parser = SQLParser(dialect=dialect, default_schema=default_schema)
    engine = None
    if supported:
        try:
            engine = hook.get_sqlalchemy_engine()
        except Exception:  # no SQLAlchemy dialect for this driver: the schema query is then compiled generically
            log.debug("no SQLAlchemy engine for %s", type(hook).__name__, exc_info=True)
    # Only a hook with OpenLineage support knows its information schema; asking another one just logs a warning.
    parsed_sql = parser.generate_openlineage_metadata_from_sql(
        sql=sql, hook=hook, database_info=database_info, sqlalchemy_engine=engine, use_connection=supported
    )
    result = ModelLineage(
        namespace=parser.create_namespace(database_info),
        inputs=list(parsed_sql.inputs),
        run_facets=dict(parsed_sql.run_facets),
        job_facets=dict(parsed_sql.job_facets),
    )
    meta = parser.parse(parser.split_sql_string(sql))
    for column in meta.column_lineage if meta else ():
        result.columns[column.descendant.name] = [
            (
                from_table_meta(
                    origin.origin, database_info.database, result.namespace, database_info.is_uppercase_names
                ).name,
                origin.name,
            )
            for origin in column.lineage
            if origin.origin is not None
        ]
    _add_read_columns(result)
    return result


def _add_read_columns(model: ModelLineage) -> None:
    """Give an input the columns the model reads from it when the database did not describe the table."""
    from openlineage.client.facet_v2 import schema_dataset

    read: dict[str, dict[str, None]] = {}
    for origins in model.columns.values():
        for table, column in origins:
            read.setdefault(table, {})[column] = None
    for dataset in model.inputs:
        if read.get(dataset.name) and not (dataset.facets or {}).get("schema"):
            dataset.facets = {
                **(dataset.facets or {}),
                "schema": schema_dataset.SchemaDatasetFacet(
                    fields=[schema_dataset.SchemaDatasetFacetFields(name=name) for name in read[dataset.name]]
                ),
            }


def destination_dataset(
    host: str,
    destination: str,
    *,
    fields: Mapping[str, str] | None = None,
    model: ModelLineage | None = None,
    rows_sent: int | None = None,
) -> OutputDataset:
    """The Attentive destination as an OpenLineage output.

    :param fields: ``{model column: destination field}``; ``None`` maps the model's columns by name.
    :param model: what the model reads, for the column lineage of each destination field.
    :param rows_sent: rows Attentive accepted in this run (``outputStatistics``); ``None`` before the run.
    """
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import column_lineage_dataset, output_statistics_output_dataset, schema_dataset

    if fields is None:
        fields = {column: column for column in (model.columns if model else ())}
    facets: dict[str, Any] = {}
    if fields:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=name) for name in dict.fromkeys(fields.values())]
        )
    sources: dict[str, list[Any]] = {}
    if model is not None:
        columns = {name.lower(): origins for name, origins in model.columns.items()}
        for column, target in fields.items():
            for table, table_column in model.columns.get(column) or columns.get(column.lower()) or ():
                sources.setdefault(target, []).append(
                    column_lineage_dataset.InputField(namespace=model.namespace, name=table, field=table_column)
                )
    if sources:
        facets["columnLineage"] = column_lineage_dataset.ColumnLineageDatasetFacet(
            fields={target: column_lineage_dataset.Fields(inputFields=inputs) for target, inputs in sources.items()}
        )
    output_facets: dict[str, Any] = {}
    if rows_sent is not None:
        output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=rows_sent
        )
    return OutputDataset(namespace=namespace(host), name=destination, facets=facets, outputFacets=output_facets)


def _task_error(task_instance: Any) -> BaseException | None:
    """The exception the task failed with: the task runner puts it in the context before telling listeners."""
    try:
        context = task_instance.get_template_context()
    except Exception:
        return None
    error = context.get("exception") if isinstance(context, Mapping) else None
    return error if isinstance(error, BaseException) else None


class AttentiveLineageMixin:
    """OpenLineage methods for :class:`~airflow_provider_attentive.operators.base.AttentiveSyncOperator`.

    ``execute`` keeps the SQL hook, the Attentive hook and the run summary on the operator (the OpenLineage
    listener asks the same operator object once the task has finished); everything else is derived from the
    operator's parameters. A subclass whose destination is not ``<object_type>/<sync_id>`` overrides
    :meth:`openlineage_destination`.
    """

    _lineage_sql_hook: DbApiHook | None = None
    _lineage_api_hook: BaseHook | None = None
    _lineage_summary: dict[str, Any] | None = None

    if TYPE_CHECKING:
        object_type: ClassVar[str]
        sql: str
        sql_conn_id: str
        attentive_conn_id: str
        sync_id: str
        mapping: dict[str, str] | None

        def _db_hook(self, conn_id: str) -> DbApiHook: ...

    def openlineage_destination(self) -> str:
        """The dataset name of what this sync writes to (``subscriptions/<sync_id>`` for a list, say)."""
        return destination_name(self.object_type, self.sync_id)

    # -- what the OpenLineage provider calls -----------------------------------------------------------------

    def get_openlineage_facets_on_start(self) -> OperatorLineage:
        """Inputs and the destination before anything is read or sent."""
        return self._openlineage(None, None)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The same datasets with the run's counts."""
        return self._openlineage(self._lineage_summary, None)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        """The same datasets with the counts so far and the error."""
        error: BaseException | str = _task_error(task_instance) or f"Attentive sync {self.sync_id!r} failed"
        return self._openlineage(self._lineage_summary, error)

    # -- building ----------------------------------------------------------------------------------------------

    def _openlineage(self, summary: Mapping[str, Any] | None, error: BaseException | str | None) -> OperatorLineage:
        from airflow.providers.openlineage.extractors import OperatorLineage

        model: ModelLineage | None = None
        try:
            model = model_lineage(self._lineage_sql_hook or self._db_hook(self.sql_conn_id), self.sql)
        except Exception as exc:  # lineage must never fail a sync: report the destination without its inputs
            log.warning("OpenLineage could not parse the model of %s: %s", self.sync_id, exc)
            log.debug("details", exc_info=True)
        outputs: list[Any] = []
        if not getattr(self, "dry_run", False):
            counts = sync_counts(summary) if summary else None
            outputs.append(
                destination_dataset(
                    self._lineage_api_host(),
                    self.openlineage_destination(),
                    fields=self.mapping,
                    model=model,
                    rows_sent=counts["sent"] if counts else None,
                )
            )
        return OperatorLineage(
            inputs=model.inputs if model else [],
            outputs=outputs,
            run_facets={**(model.run_facets if model else {}), **run_facets(summary, error)},
            job_facets=model.job_facets if model else {},
        )

    def _lineage_api_host(self) -> str:
        """The API host of the Attentive connection: the transport's base URL once it exists, else the connection."""
        config = getattr(self._lineage_api_hook, "config", None) if self._lineage_api_hook is not None else None
        base_url = getattr(config, "base_url", None)
        if base_url:
            return api_host(base_url)
        from airflow.sdk import BaseHook

        connection = BaseHook.get_connection(self.attentive_conn_id)
        return api_host(connection.host, connection.port)

    # -- hook lineage, reported while the task runs ---------------------------------------------------------------

    def _report_lineage(self, summary: dict[str, Any]) -> None:
        """Keep the summary for the listener, and tell the hook lineage collector what was read and written."""
        self._lineage_summary = summary
        try:
            self._report_hook_lineage(summary)
        except Exception as exc:  # lineage must never fail a sync
            log.warning("hook lineage for %s was not reported: %s", self.sync_id, exc)
            log.debug("details", exc_info=True)

    def _report_hook_lineage(self, summary: Mapping[str, Any]) -> None:
        hook = self._lineage_sql_hook
        if hook is not None and summary.get("rows_read") is not None:
            try:
                from airflow.providers.common.sql.hooks.lineage import send_sql_hook_lineage
            except ImportError:  # common-sql older than the hook-level SQL lineage API
                pass
            else:
                # No sql_parameters: bound values of a model (dates, ids, emails) have no place in lineage.
                send_sql_hook_lineage(context=hook, sql=self.sql, row_count=int(summary["rows_read"]))
        if getattr(self, "dry_run", False) or self._lineage_api_hook is None:
            return
        try:
            from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector
        except ImportError:
            from airflow.sdk.lineage import get_hook_lineage_collector
        get_hook_lineage_collector().add_output_asset(
            context=self._lineage_api_hook,
            scheme=SCHEME,
            asset_kwargs={"host": self._lineage_api_host(), "destination": self.openlineage_destination()},
        )
