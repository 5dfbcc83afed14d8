"""A run's send budget: ``max_rows_per_run`` requests and ``max_runtime_s`` seconds, then the rest waits.

What a run does not send is counted as ``remaining`` and goes out with the next run, so a budget bounds a run's
length without losing rows.
"""

from __future__ import annotations

import logging
import time

from airflow_provider_attentive.sync.options import SyncOptions
from airflow_provider_attentive.sync.summary import Summary

__all__ = ["SendBudget"]


class SendBudget:
    """Counts the requests a run has handed to its delivery and says how many more it may send."""

    def __init__(self, options: SyncOptions, summary: Summary, log: logging.Logger) -> None:
        self.options = options
        self.summary = summary
        self.log = log
        self.started = time.monotonic()
        self.sent = 0
        self.exhausted = False

    def admit(self, wanted: int, *, halted: bool) -> int:
        """How many of the next ``wanted`` requests may go out; the rest count as ``remaining``.

        Called just before a batch's intents are written, when every earlier batch has been handed to the
        delivery, so ``sent`` is exact and a run never sends more than ``max_rows_per_run`` requests.
        """
        if halted:
            self.summary.remaining += wanted
            return 0
        allowed = 0 if self._reached() else wanted
        if self.options.max_rows_per_run is not None:
            allowed = min(allowed, max(0, self.options.max_rows_per_run - self.sent))
        if allowed < wanted:
            self.summary.remaining += wanted - allowed
            self._exhaust()
        return allowed

    def _reached(self) -> bool:
        opt = self.options
        if not self.exhausted and (
            (opt.max_rows_per_run is not None and self.sent >= opt.max_rows_per_run)
            or (opt.max_runtime_s is not None and time.monotonic() - self.started >= opt.max_runtime_s)
        ):
            self._exhaust()
        return self.exhausted

    def _exhaust(self) -> None:
        if self.exhausted:
            return
        self.exhausted = True
        self.log.warning(
            "budget reached (max_rows_per_run=%s, max_runtime=%ss): stopping sends; the rest is counted as "
            "remaining and goes out next run",
            self.options.max_rows_per_run,
            self.options.max_runtime_s,
        )
