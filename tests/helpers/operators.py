"""The Attentive operators outside a DAG run: a TaskInstance stand-in, a context, operators built from configs.

Nothing here imports Airflow until an operator is built, so a runner process can set ``AIRFLOW_HOME`` after
importing this module and before Airflow reads it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_attentive.operators.base import AttentiveSyncOperator

__all__ = ("TaskInstance", "build_operator", "context", "operator", "operator_class")


class TaskInstance:
    """The part of a TaskInstance the operators use outside a DAG run: try and map index, and ``xcom_push``.

    Pushed values are stored as they come back from JSON: XCom values must be JSON-serialisable.
    """

    def __init__(self, try_number: int = 1, *, map_index: int = -1) -> None:
        self.try_number = try_number
        self.map_index = map_index
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = json.loads(json.dumps(value))


def context(ti: TaskInstance | None = None, run_id: str = "manual__test", **extra: Any) -> Context:
    """The task context ``execute`` reads: ``run_id``, ``ti`` and ``extra`` (such as ``data_interval_start``)."""
    return cast("Context", {"run_id": run_id, "ti": ti, **extra})


def operator_class(kind: str) -> type[AttentiveSyncOperator]:
    """The operator class for ``kind``: ``attributes``, ``events``, ``segments`` or ``subscriptions``."""
    from airflow_provider_attentive.operators.attributes import AttentiveAttributesOperator
    from airflow_provider_attentive.operators.events import AttentiveEventsOperator
    from airflow_provider_attentive.operators.segments import AttentiveSegmentsOperator
    from airflow_provider_attentive.operators.subscriptions import AttentiveSubscriptionsOperator

    classes: dict[str, type[AttentiveSyncOperator]] = {
        "attributes": AttentiveAttributesOperator,
        "events": AttentiveEventsOperator,
        "segments": AttentiveSegmentsOperator,
        "subscriptions": AttentiveSubscriptionsOperator,
    }
    return classes[kind]


def operator(kind: str, *, engine: Mapping[str, Any] | None = None, **kwargs: Any) -> AttentiveSyncOperator:
    """An operator of ``kind``; ``task_id`` defaults to ``kind`` and ``sql_conn_id`` to ``warehouse``.

    ``engine`` sets :class:`~airflow_provider_attentive.sync.engine.SyncOptions` fields the operators do not
    expose (such as ``lock_ttl_s``), through their ``sync_options()`` hook.
    """
    kwargs.setdefault("task_id", kind)
    kwargs.setdefault("sql_conn_id", "warehouse")
    cls = operator_class(kind)
    if engine:
        cls = _tuned(cls, dict(engine))
    return cls(**kwargs)


def _tuned(base: type[AttentiveSyncOperator], engine_options: dict[str, Any]) -> type[AttentiveSyncOperator]:
    class Tuned(base):  # type: ignore[valid-type, misc]
        def sync_options(self) -> dict[str, Any]:
            return {**super().sync_options(), **engine_options}

    Tuned.__name__ = Tuned.__qualname__ = base.__name__
    return Tuned


def build_operator(config: Mapping[str, Any]) -> AttentiveSyncOperator:
    """The operator a runner's JSON config describes.

    Keys: ``object`` (``attributes`` | ``events`` | ``segments`` | ``subscriptions``), ``sql``, ``primary_key``,
    ``mapping``, ``sync_id``, ``mode`` (subscriptions, segments), ``task_id``, ``sql_conn_id``, ``options`` (any
    other operator keyword argument) and ``engine`` (see :func:`operator`).
    """
    kwargs: dict[str, Any] = {
        "sql": config["sql"],
        "primary_key": config["primary_key"],
        "mapping": config.get("mapping"),
        "sync_id": config.get("sync_id"),
        **(config.get("options") or {}),
    }
    for key in ("task_id", "sql_conn_id", "mode"):
        if key in config:
            kwargs[key] = config[key]
    return operator(config["object"], engine=config.get("engine"), **kwargs)
