"""The sync engine wired for tests: a transport to the emulator, a SQL source, a state store, one call to run.

``run_sync`` (the fixture in ``tests/sync/conftest.py``) is :func:`engine_runner` over the emulator's
transport; tests that need a transport of their own (another key, fewer attempts, faster limits) build it
with :func:`transport`, and tests that drive the engine by hand build it with :func:`sync_engine`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_provider_attentive.client import AttentiveTransport, LimiterRegistry, TransportConfig
from airflow_provider_attentive.sync.engine import SyncEngine, SyncOptions
from airflow_provider_attentive.sync.objects import ObjectType
from airflow_provider_attentive.sync.source import SqlSource
from airflow_provider_attentive.sync.state import StateStore

__all__ = ("TEST_KEY", "RunSync", "engine_runner", "ops", "sync_engine", "transport", "transport_config")

TEST_KEY = "test-key"  # the key the attentive_emulator fixture accepts, with every scope

RunSync = Callable[..., dict[str, Any]]


def transport_config(url: str, **overrides: Any) -> TransportConfig:
    """A config for the emulator at ``url``: the test key, and backoff in milliseconds so retries cost nothing."""
    settings: dict[str, Any] = {"api_key": TEST_KEY, "backoff_base": 0.01, "backoff_max": 0.05, **overrides}
    return TransportConfig(base_url=url, **settings)


def transport(url: str, *, registry: LimiterRegistry | None = None, **overrides: Any) -> AttentiveTransport:
    """A transport built from :func:`transport_config`; ``registry`` keeps its limiters apart from others'."""
    return AttentiveTransport(transport_config(url, **overrides), registry=registry)


def sync_engine(
    obj: ObjectType,
    conn: Any,
    sql: str,
    *,
    sender: Any,
    state_conn: Any = None,
    placeholder: str = "?",
    chunk: int = 1000,
    source_type: type[SqlSource] = SqlSource,
    **options: Any,
) -> SyncEngine:
    """An engine reading ``sql`` from ``conn`` in chunks of ``chunk`` rows, its state in ``state_conn`` (or ``conn``).

    ``options`` are :class:`SyncOptions` fields; ``sync_id`` defaults to ``test.sync``.
    """
    options.setdefault("sync_id", "test.sync")
    return SyncEngine(
        obj,
        SyncOptions(**options),
        source=source_type(conn, sql, chunk_size=chunk),
        state=StateStore(state_conn if state_conn is not None else conn, placeholder=placeholder),
        sender=sender,
    )


def engine_runner(default_sender: Any) -> RunSync:
    """``run(obj, conn, sql, **kwargs)``: one :func:`sync_engine` run, sending through ``default_sender``
    unless ``sender=`` says otherwise; returns the summary.

    Progress is logged (and the lock refreshed) every half second, so that short runs do both too.
    """

    def run(obj: ObjectType, conn: Any, sql: str, *, sender: Any = None, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("progress_interval_s", 0.5)
        return sync_engine(obj, conn, sql, sender=sender or default_sender, **kwargs).run()

    return run


def ops(summary: dict[str, Any], name: str) -> tuple[int, int, int]:
    """``(added, changed, removed)`` of one of the summary's counters (planned, succeeded, failed)."""
    d = summary[name]
    return d["added"], d["changed"], d["removed"]
