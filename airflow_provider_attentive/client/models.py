"""What goes into the transport and what comes out: :class:`Request`, :class:`Result`, :class:`RequestOutcome`."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_attentive.client.endpoints import EndpointName

__all__ = ["Request", "RequestOutcome", "Result"]


class RequestOutcome(str, enum.Enum):
    """How one HTTP request ended.

    ``IN_DOUBT`` means a non-idempotent request failed in a way that leaves open whether Attentive
    applied it; the caller has to find out (for example with ``GET /v1/subscriptions``) instead of
    resending.
    """

    OK = "ok"
    REJECTED = "rejected"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"


@dataclass(frozen=True)
class Request:
    """One request for :meth:`~airflow_provider_attentive.client.AttentiveTransport.send_many`.

    ``key`` is echoed back in its :class:`Result`. ``params`` is the query string; ``path_params`` fills
    the endpoint's ``{...}`` path parameters (``{"bulkJobId": ...}``), URL-quoted by the transport.
    """

    key: Any
    body: Any = None
    params: Mapping[str, str] | None = None
    path_params: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Result:
    """How one request ended.

    ``attempts`` counts tries that got an answer other than 429 or hit a network error; ``throttled``
    counts 429 answers. ``error`` is a readable message (Attentive's own message for 4xx) and never
    contains the API key.
    """

    key: Any
    endpoint: EndpointName
    outcome: RequestOutcome
    status: int | None
    body: Any
    error: str | None
    attempts: int
    throttled: int
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """True if Attentive accepted the request."""
        return self.outcome is RequestOutcome.OK
