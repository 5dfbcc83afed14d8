"""Cumulative counters of what one transport sent and how it ended."""

from __future__ import annotations

import threading

__all__ = ["TransportStats"]


class TransportStats:
    """Cumulative, thread-safe counters for one transport."""

    _FIELDS = (
        "requests_sent",
        "retries",
        "throttled",
        "network_errors",
        "succeeded",
        "rejected",
        "failed",
        "in_doubt",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self._FIELDS, 0)

    def add(self, **deltas: int) -> None:
        """Increase counters by name."""
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of all counters, plus ``failures`` (results that did not end OK)."""
        with self._lock:
            counts = dict(self._counts)
        counts["failures"] = counts["rejected"] + counts["failed"] + counts["in_doubt"]
        return counts

    @property
    def requests_sent(self) -> int:
        """HTTP requests put on the wire, retries and throttled ones included."""
        return self.snapshot()["requests_sent"]

    @property
    def retries(self) -> int:
        """Requests sent again after a 5xx, 408 or network error."""
        return self.snapshot()["retries"]

    @property
    def throttled(self) -> int:
        """429 answers received."""
        return self.snapshot()["throttled"]

    @property
    def failures(self) -> int:
        """Results that ended REJECTED, FAILED or IN_DOUBT."""
        return self.snapshot()["failures"]

    def __repr__(self) -> str:
        return f"TransportStats({self.snapshot()})"
