"""HTTP client for the emulator's ``/_emulator`` inspection and control routes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx

from .jobs import JobInfo, ResultsHit
from .keys import ALL_SCOPES
from .segments import SegmentInfo

__all__ = ["EmulatorClient", "EmulatorError"]


class EmulatorError(RuntimeError):
    """A control route answered with an error status."""


class EmulatorClient:
    """Inspect and steer a running emulator (in-process or subprocess) over HTTP.

    Works against any emulator URL, so tests can control a subprocess emulator the same
    way as an in-process one. Thread-safe to the extent ``httpx.Client`` is.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=f"{self.url}/_emulator", timeout=timeout)

    def __repr__(self) -> str:
        return f"EmulatorClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmulatorClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=json, params=params)
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise EmulatorError(f"{method} /_emulator{path} -> {response.status_code}: {message}")
        return response.json()

    # -- control --------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def reset(self) -> None:
        """Clear data, stats, messages, faults and rate-limit windows; restore limits; keep keys."""
        self._call("POST", "/reset")

    def index(self) -> dict[str, Any]:
        """Every control and inspection route (method, path, description) and every API endpoint."""
        return self._call("GET", "/")

    def add_key(
        self,
        key: str,
        scopes: Iterable[str] = ALL_SCOPES,
        company_name: str = "Emulated Co",
        v2_access: bool = True,
    ) -> dict[str, Any]:
        """Accept ``key``; ``v2_access=False`` makes every /v2 path answer it 404 (Attentive's beta gate)."""
        body = {"key": key, "scopes": list(scopes), "company_name": company_name, "v2_access": v2_access}
        return self._call("POST", "/keys", body)

    def remove_key(self, key: str) -> bool:
        """Revoke a key (later calls with it get 401)."""
        return bool(self._call("DELETE", "/keys", {"key": key})["removed"])

    def set_faults(
        self,
        latency_ms: float = 0,
        jitter_ms: float = 0,
        error_rate: float = 0.0,
        drop_rate: float = 0.0,
        drop_after_apply_rate: float = 0.0,
        hang_rate: float = 0.0,
        hang_s: float = 30.0,
        non_json_rate: float = 0.0,
        endpoints: Iterable[str] | None = None,
        seed: int | None = None,
        apply_then_5xx_rate: float = 0.0,
    ) -> dict[str, Any]:
        """Replace the fault configuration (unspecified settings go back to "no fault").

        ``apply_then_5xx_rate``: share of requests applied and then answered 504.
        """
        return self._call(
            "POST",
            "/faults",
            {
                "latency_ms": latency_ms,
                "jitter_ms": jitter_ms,
                "error_rate": error_rate,
                "drop_rate": drop_rate,
                "drop_after_apply_rate": drop_after_apply_rate,
                "hang_rate": hang_rate,
                "hang_s": hang_s,
                "non_json_rate": non_json_rate,
                "apply_then_5xx_rate": apply_then_5xx_rate,
                "endpoints": list(endpoints) if endpoints is not None else None,
                "seed": seed,
            },
        )

    def clear_faults(self) -> None:
        self._call("POST", "/faults", {})

    def set_limits(self, limits: Mapping[str, int]) -> dict[str, int]:
        """Update per-second limits by endpoint name (``"*"`` = every endpoint); returns all limits."""
        return self._call("POST", "/limits", dict(limits))

    def limits(self) -> dict[str, int]:
        return self._call("GET", "/limits")

    def set_enumerated_attributes(self, attributes: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
        """Declare UI-created enumerated attributes: other values for them are answered 400, as Attentive does."""
        return self._call("POST", "/enumerated_attributes", {k: list(v) for k, v in attributes.items()})

    def seed_opted_out(self, phones: Iterable[str]) -> None:
        """Mark phones as opted out: subscribing them answers 400."""
        self._call("POST", "/opted_out", {"phones": list(phones)})

    def set_sign_up(
        self,
        sources: Mapping[str, str] | None = None,
        units: Iterable[Mapping[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Configure signUpSourceId -> subscription type, and/or the API sign-up units for locales."""
        body: dict[str, Any] = {}
        if sources is not None:
            body["sources"] = dict(sources)
        if units is not None:
            body["units"] = [dict(u) for u in units]
        return self._call("POST", "/sign_up", body)

    def set_job_settings(
        self,
        *,
        delay_s: float | None = None,
        pending_s: float | None = None,
        hold: bool | None = None,
        fail_rate: float | None = None,
        drop_line_rate: float | None = None,
        garble_line_rate: float | None = None,
        results_ttl_s: float | None = None,
        results_host: str | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Replace the v2 bulk job settings; the ones left out take their defaults (:class:`~.jobs.JobSettings`).

        ``delay_s`` until a job completes (``PENDING`` for ``pending_s``, then ``IN_PROGRESS``);
        ``hold`` keeps jobs ``IN_PROGRESS`` until :meth:`release_jobs`; ``fail_rate`` is the share
        of jobs that end ``FAILED`` with nothing applied; ``drop_line_rate`` / ``garble_line_rate``
        the share of results lines left out / cut in half (not JSON).
        """
        given = {
            "delay_s": delay_s,
            "pending_s": pending_s,
            "hold": hold,
            "fail_rate": fail_rate,
            "drop_line_rate": drop_line_rate,
            "garble_line_rate": garble_line_rate,
            "results_ttl_s": results_ttl_s,
            "results_host": results_host,
            "seed": seed,
        }
        return self._call("POST", "/jobs/settings", {k: v for k, v in given.items() if v is not None})

    def job_settings(self) -> dict[str, Any]:
        return self._call("GET", "/jobs/settings")

    def release_jobs(self, ids: Iterable[str] | None = None) -> list[str]:
        """Let held jobs complete (every unfinished one without ``ids``); returns the ids released."""
        body = {} if ids is None else {"ids": list(ids)}
        return list(self._call("POST", "/jobs/release", body)["released"])

    # -- inspection -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def attributes(self) -> dict[str, dict[str, Any]]:
        return self._call("GET", "/attributes")

    def events(self) -> list[dict[str, Any]]:
        return self._call("GET", "/events")

    def subscriptions(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self._call("GET", "/subscriptions")

    def messages(self) -> list[dict[str, Any]]:
        return self._call("GET", "/messages")

    def identities(self) -> list[dict[str, Any]]:
        return self._call("GET", "/identities")

    def jobs(self) -> list[JobInfo]:
        """Every v2 bulk job in submission order: id, kind (its route name), status, records, masked key."""
        return self._call("GET", "/jobs")

    def segments(self) -> dict[str, SegmentInfo]:
        """Every v2 segment by externalId, archived ones too, with its members' keys."""
        return self._call("GET", "/segments")

    def results_downloads(self) -> list[ResultsHit]:
        """Every request for a results file, with its status and whether an Authorization header came."""
        return self._call("GET", "/results")

    def requests(self, endpoint: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if endpoint is not None:
            params["endpoint"] = endpoint
        if limit is not None:
            params["limit"] = limit
        return self._call("GET", "/requests", params=params)
