"""The state of one v2 bulk job, read defensively from ``GET /v2/bulk/job/{bulkJobId}``.

Attentive's schema lists ``IN_PROGRESS`` and ``COMPLETED``; its description also names ``PENDING`` and
``FAILED``. Only ``COMPLETED`` and ``FAILED`` end a job. Anything else, including a value nobody has seen yet
or an answer that cannot be read, means "not finished": taking a malformed answer for "done" would report
rows as delivered that nobody has confirmed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COMPLETED", "FAILED", "FINISHED_STATUSES", "JobStatus"]

COMPLETED = "COMPLETED"
FAILED = "FAILED"
FINISHED_STATUSES = frozenset({COMPLETED, FAILED})


@dataclass(frozen=True)
class JobStatus:
    """One bulk job as last seen.

    ``status`` is Attentive's value, upper-cased (``None`` when the answer had none that could be read).
    ``reason`` says why the answer could not be used (malformed, HTTP error, not polled yet); a status with a
    reason is never finished. ``url`` is the results link of a finished job: it is pre-signed, so it is left
    out of ``repr`` and of :meth:`to_event`. ``COMPLETED`` means the job ran, not that every item succeeded:
    the results file says which did.
    """

    id: str
    status: str | None
    total_records: int | None = None
    url: str | None = field(default=None, repr=False)
    reason: str | None = None

    @property
    def finished(self) -> bool:
        """True once Attentive reports ``COMPLETED`` or ``FAILED`` in a readable answer."""
        return self.reason is None and self.status in FINISHED_STATUSES

    @property
    def completed(self) -> bool:
        """True when the job ran to the end (its results file tells each item's outcome)."""
        return self.reason is None and self.status == COMPLETED

    @classmethod
    def unknown(cls, job_id: str, reason: str) -> JobStatus:
        """A job whose state is not known (not polled yet, or the last poll failed): not finished."""
        return cls(id=job_id, status=None, reason=reason)

    @classmethod
    def from_answer(cls, job_id: str, body: Any) -> JobStatus:
        """Read Attentive's answer for ``job_id``; any malformed part leaves the job not finished, with a reason."""
        if not isinstance(body, Mapping):
            return cls.unknown(job_id, f"the job status answer is not a JSON object ({type(body).__name__})")
        answered_id = body.get("bulkJobId")
        if answered_id is not None and answered_id != job_id:
            # A status for another job (a proxy's cache, a server bug) says nothing about this one.
            return cls.unknown(job_id, f"the job status answer is about job {str(answered_id)[:100]!r}")
        raw_status = body.get("status")
        if not isinstance(raw_status, str) or not raw_status.strip():
            what = "no status" if raw_status is None else f"an unreadable status ({type(raw_status).__name__})"
            return cls.unknown(job_id, f"the job status answer has {what}")
        return cls(
            id=job_id,
            status=raw_status.strip().upper()[:100],
            total_records=_count(body.get("totalRecords")),
            url=_link(body.get("url")),
        )

    def to_event(self) -> dict[str, Any]:
        """A JSON-safe summary for a trigger event or XCom: everything but the signed link."""
        return {
            "id": self.id,
            "status": self.status,
            "finished": self.finished,
            "total_records": self.total_records,
            "results_available": self.url is not None,
            "reason": self.reason,
        }


def _count(value: Any) -> int | None:
    # Informational only (the results file is what gets counted), so an odd value is dropped, not fatal.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit():
        return int(text)
    return None


def _link(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
