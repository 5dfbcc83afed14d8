"""Run-level options of a sync, checked when they are built (a broken configuration fails before anything runs)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from airflow_provider_attentive.sync.errors import SyncConfigError

__all__ = ["SyncOptions"]


@dataclass
class SyncOptions:
    """Run-level options shared by every object type."""

    sync_id: str
    run_id: str = ""
    mode: str = ""  # empty: the object type's only/first mode (upsert, insert, add)
    dry_run: bool = False
    max_failed_ratio: float = 0.1
    chunk_size: int = 1000
    batch_size: int = 100
    flush_interval_s: float = 1.0
    resend_in_doubt: bool = False
    max_removals: int | float = 0.2
    allow_empty_source: bool = False
    max_rows_per_run: int | None = None
    max_runtime_s: float | None = None
    lock_ttl_s: float = 300.0
    lock_wait_s: float = 60.0
    log_retention_days: int | None = 30
    progress_interval_s: float = 10.0
    check_primary_key: bool = True
    dry_run_samples: int = 5
    # A run whose last N requests all failed after their retries stops (circuit breaker): against an
    # unreachable Attentive each row would otherwise cost max_attempts tries and backoff, hours for a big model.
    max_consecutive_failures: int = 50

    def __post_init__(self) -> None:
        if not self.sync_id or len(self.sync_id) > 250:
            raise SyncConfigError("sync_id must be 1-250 characters")
        if not self.run_id:
            self.run_id = f"run-{uuid.uuid4().hex[:12]}"
        if len(self.run_id) > 200:  # state columns are VARCHAR(250) and the lock holder adds a suffix
            digest = hashlib.blake2b(self.run_id.encode(), digest_size=6).hexdigest()
            self.run_id = f"{self.run_id[:187]}~{digest}"
        if not 0 <= self.max_failed_ratio <= 1:
            raise SyncConfigError(f"max_failed_ratio must be between 0 and 1, got {self.max_failed_ratio!r}")
        if isinstance(self.max_removals, bool) or not isinstance(self.max_removals, int | float):
            raise SyncConfigError("max_removals must be an int (count) or a float (share of tracked members)")
        if isinstance(self.max_removals, float) and not 0 <= self.max_removals <= 1:
            raise SyncConfigError("max_removals as a float is a share of tracked members: between 0.0 and 1.0")
        if self.max_removals < 0:
            raise SyncConfigError("max_removals must not be negative")
        if self.batch_size < 1 or self.chunk_size < 1:
            raise SyncConfigError("batch_size and chunk_size must be positive")
        if self.max_rows_per_run is not None and self.max_rows_per_run < 0:
            raise SyncConfigError("max_rows_per_run must be positive")
