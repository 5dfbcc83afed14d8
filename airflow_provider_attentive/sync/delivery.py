"""How planned requests reach Attentive: the delivery strategies behind the engine's one loop.

The engine plans rows and writes their intents batch by batch; a :class:`Delivery` takes those batches and
yields each row's answer. Two shapes fit this seam:

* :class:`PerRowDelivery`: one request per row, answered at once (v1 endpoints);
* :class:`~airflow_provider_attentive.sync.bulk.BulkJobDelivery` (v2 bulk jobs): one request carries a whole batch
  (256 users, or 10,000 segment members), and Attentive answers with a job whose results file gives each row's
  outcome later. It records the job against its rows when submitted, yields nothing for them then, and yields their
  answers from :meth:`Delivery.wait` (in this run) or :meth:`Delivery.reconcile` (in a later run) once the job has
  finished. Custom attributes and segment members each subclass it.

Either way the engine records every answer the same way, so the loop does not change with the strategy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from airflow_provider_attentive.client import Request, Result
from airflow_provider_attentive.sync.object_type import Planned, Run

__all__ = ["BaseDelivery", "Delivery", "PerRowDelivery", "Sender"]


class Sender(Protocol):
    """What a delivery needs from the transport (``client.AttentiveTransport`` or ``AttentiveHook``)."""

    def send_many(self, endpoint: Any, requests: Any, *, window: int | None = None) -> Iterator[Result]: ...


class Delivery(Protocol):
    """A way of turning batches of planned rows into answers, one per row."""

    #: rows per batch of intents this delivery wants (None: the run's ``batch_size``)
    batch_size: int | None

    def bind(self, run: Run) -> None:
        """Start a run (called once by the engine, before anything else)."""
        ...

    def summary_counters(self) -> dict[str, Any]:
        """The delivery's own summary counters, with their initial values."""
        ...

    def deliver(self, endpoint: str, batches: Iterable[Sequence[Planned]]) -> Iterator[tuple[Planned, Result]]:
        """Send ``batches`` (pulled lazily: each batch's intents are written just before it is pulled) and
        yield ``(row, answer)`` for every row answered now."""
        ...

    def reconcile(self) -> Iterator[tuple[Planned, Result]]:
        """Answers for rows an earlier run sent whose outcome arrived since (bulk jobs); nothing for per-row."""
        ...

    def wait(self) -> Iterator[tuple[Planned, Result]]:
        """After the rows: wait (within the delivery's own limit) for this run's outstanding answers."""
        ...

    def progress_note(self) -> str:
        """What the progress line adds for this delivery (``", jobs ..."``), or ``""``."""
        ...


class BaseDelivery:
    """Defaults for a delivery that answers every row at once: nothing to reconcile, nothing to wait for."""

    batch_size: int | None = None

    def bind(self, run: Run) -> None:
        self.run = run

    def summary_counters(self) -> dict[str, Any]:
        return {}

    def reconcile(self) -> Iterator[tuple[Planned, Result]]:
        return iter(())

    def wait(self) -> Iterator[tuple[Planned, Result]]:
        return iter(())

    def progress_note(self) -> str:
        return ""


class PerRowDelivery(BaseDelivery):
    """One request per row, answered at once: the transport keeps many in flight within the rate limits."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    def deliver(self, endpoint: str, batches: Iterable[Sequence[Planned]]) -> Iterator[tuple[Planned, Result]]:
        in_flight: dict[str, Planned] = {}

        def requests() -> Iterator[Request]:
            for batch in batches:
                for item in batch:
                    in_flight[item.key] = item
                    yield Request(key=item.key, body=item.body)

        for result in self.sender.send_many(endpoint, requests()):
            yield in_flight.pop(str(result.key)), result
