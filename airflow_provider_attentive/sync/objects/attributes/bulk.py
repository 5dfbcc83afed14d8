"""Custom attributes through Attentive's v2 bulk jobs: 256 users per request, or v1 below a threshold.

``BulkAttributesDelivery`` is the attributes' :class:`~airflow_provider_attentive.sync.bulk.BulkJobDelivery`:
each batch of planned rows becomes one ``POST /v2/bulk/user/attributes``; ``"auto"`` sends small runs through
v1 (they land sooner) and falls back to v1 when the key cannot use bulk jobs. See ``docs/bulk-jobs.md``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from airflow_provider_attentive.client import EndpointName, Result
from airflow_provider_attentive.sync.bulk import BulkJobDelivery, read_line
from airflow_provider_attentive.sync.delivery import PerRowDelivery, Sender
from airflow_provider_attentive.sync.object_type import Planned, Run

__all__ = ["BulkAttributesDelivery", "BulkMode", "v2_user"]

BulkMode = bool | Literal["auto"]


def v2_user(body: dict[str, Any]) -> dict[str, Any]:
    """A v1 attributes body (``{"properties", "user"}``) as a v2 bulk user: identifiers and custom attributes.

    Never a ``subscriptions`` field: an attributes sync must not opt anyone in.
    """
    user = body.get("user") or {}
    identifiers: dict[str, Any] = {k: user[k] for k in ("phone", "email") if user.get(k)}
    client_user_id = (user.get("externalIdentifiers") or {}).get("clientUserId")
    if client_user_id:
        identifiers["clientUserId"] = client_user_id
    return {"identifiers": identifiers, "attributes": {"custom": dict(body.get("properties") or {})}}


class BulkAttributesDelivery(BulkJobDelivery):
    """Rows as v2 bulk jobs (``mode=True``), as v1 requests (``False``), or bulk from ``threshold`` rows up.

    Whatever the mode, open jobs of earlier runs are reconciled, so switching bulk off never strands rows.

    :param sender: the transport.
    :param mode: ``True``, ``False`` or ``"auto"``.
    :param threshold: in ``"auto"``, the rows to send that make a run go through bulk jobs.
    :param batch_size: users per bulk request (1-256).
    :param wait_s: how long :meth:`wait` polls this run's jobs (0: leave them to the next run).
    :param poll_interval_s: the first pause between polls; it doubles up to 30 s.
    :param allow_insecure_http: let the results link be plain http to a non-loopback host (never for real).
    :param proxy: the connection's own proxy for the results download (the environment's is never used).
    """

    def __init__(
        self,
        sender: Sender,
        *,
        mode: BulkMode = "auto",
        threshold: int = 100_000,
        batch_size: int = 256,
        wait_s: float = 600.0,
        poll_interval_s: float = 1.0,
        allow_insecure_http: bool = False,
        proxy: str | None = None,
    ) -> None:
        if mode not in (True, False, "auto"):
            raise ValueError(f"bulk must be True, False or 'auto', got {mode!r}")
        if not 1 <= batch_size <= 256:
            raise ValueError(f"bulk_batch_size must be between 1 and 256, got {batch_size!r}")
        super().__init__(
            sender,
            batch_size=batch_size,
            wait_s=wait_s,
            poll_interval_s=poll_interval_s,
            allow_insecure_http=allow_insecure_http,
            proxy=proxy,
        )
        self.mode = mode
        self.threshold = max(0, int(threshold))
        self._bulk_batch_size = batch_size
        # v1 batches are the run's own size.
        self.batch_size = batch_size if mode is not False else None
        self.per_row = PerRowDelivery(sender)
        self.fallback: str | None = None
        self._to_v1: list[Sequence[Planned]] = []

    def bind(self, run: Run) -> None:
        super().bind(run)
        self.fallback = None
        self._to_v1 = []
        self.batch_size = self._bulk_batch_size if self.mode is not False else None

    def summary_counters(self) -> dict[str, Any]:
        return {**super().summary_counters(), "bulk_fallback": None}

    def bulk_endpoint(self, endpoint: str) -> EndpointName:
        return EndpointName.BULK

    def request_body(self, endpoint: EndpointName, items: Sequence[Planned]) -> dict[str, Any]:
        return {"users": [v2_user(item.body) for item in items]}

    def stored_identity(self, item: Planned) -> dict[str, Any]:
        return dict(v2_user(item.body)["identifiers"])

    def items_of(self, op: str, identity: dict[str, Any]) -> list[dict[str, Any]]:
        return [identity]

    def line_item(self, request: Any) -> Any:
        return request.get("identifiers") if isinstance(request, dict) else None

    def line_result(self, key: str, response: dict[str, Any], endpoint: str) -> Result:
        return read_line(key, response)

    def deliver(self, endpoint: str, batches: Iterable[Sequence[Planned]]) -> Iterator[tuple[Planned, Result]]:
        batches = iter(batches)
        if self.mode is False:
            yield from self.per_row.deliver(endpoint, batches)
            return
        if self.mode == "auto" and self.run.source.count_rows() < self.threshold:
            # Fewer rows in the whole model than the threshold: v1 it is, in the run's own batches (the stream
            # reads this before it cuts the first batch, which bounds how much a budget lets through at once).
            self.batch_size = None
            yield from self.per_row.deliver(endpoint, batches)
            return
        if self.mode == "auto":
            # The rows to send are known only once classified: up to ``threshold`` of them are held (their
            # intents written) before the choice. Below it v1 lands sooner: bulk jobs take hours.
            buffered: list[Sequence[Planned]] = []
            count = 0
            for batch in batches:
                buffered.append(batch)
                count += len(batch)
                if count >= self.threshold:
                    break
            else:
                yield from self.per_row.deliver(endpoint, buffered)
                return
            batches = itertools.chain(buffered, batches)
        yield from self._bulk(endpoint, batches)

    def refused(self, result: Result, items: list[Planned]) -> bool:
        if self.mode != "auto":
            return False
        if self.fallback is None:
            self.fallback = (
                f"bulk jobs answered HTTP {result.status} ({result.error or 'no message'}): the key lacks "
                "subscriptions:write or the account has no v2 bulk access; this run goes through v1"
            )
            self.run.summary.extra["bulk_fallback"] = self.fallback
            self.run.log.warning("%s", self.fallback)
        self.hand_over(items)
        return True

    def hand_over(self, items: list[Planned]) -> None:
        self._to_v1.append(items)

    def after_bulk(self, endpoint: str, rest: Iterator[Sequence[Planned]]) -> Iterator[tuple[Planned, Result]]:
        if self._to_v1:
            to_v1, self._to_v1 = self._to_v1, []
            yield from self.per_row.deliver(endpoint, itertools.chain(to_v1, rest))
