"""Errors raised by the sync engine. None of them carries an API key or a phone number in clear."""

from __future__ import annotations


class SyncError(Exception):
    """Base class for every error the sync engine raises on purpose."""


class SyncConfigError(SyncError):
    """The sync is configured wrongly; raised before anything is sent to Attentive."""


class SourceDataError(SyncError):
    """The source rows break a rule that must hold for the whole model (e.g. duplicate or NULL keys)."""


class WarehouseReadError(SyncError):
    """The warehouse failed while the model's rows were being read (a dropped connection, a timeout).

    Not a problem of the rows: a later try may succeed. Its message never carries the driver's own text, which
    can quote row values.
    """


class SyncAborted(SyncError):
    """A safety guard stopped the run before it sent anything dangerous (empty mirror, too many removals)."""


class SyncLockedError(SyncError):
    """Another run of the same sync holds the lock in the state store."""


class RunStopped(SyncError):
    """The run stopped with everything it did recorded; ``summary`` is the run's summary dict."""

    def __init__(self, message: str, summary: dict | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


class TooManyFailures(RunStopped):
    """More rows failed or were invalid than ``max_failed_ratio`` allows; everything was recorded first."""


class AttentiveAuthError(RunStopped):
    """Attentive refused the API key (401) or its permissions (403): no request of this run can succeed.

    The rows it touched are recorded as failed, not rejected, so the next run (with a fixed key) sends them.
    """


class AttentiveUnavailable(RunStopped):
    """Too many requests in a row failed after all their retries: the run stopped instead of grinding on."""


class SyncConfigStop(RunStopped):
    """Attentive's answers show the configuration is wrong (after some requests were accepted and recorded)."""
