"""HTTP client for the emulator's ``/_emulator`` inspection and control routes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx

from .keys import ALL_SCOPES

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

    def add_key(
        self, key: str, scopes: Iterable[str] = ALL_SCOPES, company_name: str = "Emulated Co"
    ) -> dict[str, Any]:
        return self._call("POST", "/keys", {"key": key, "scopes": list(scopes), "company_name": company_name})

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
    ) -> dict[str, Any]:
        """Replace the fault configuration (unspecified settings go back to "no fault")."""
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

    def requests(self, endpoint: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if endpoint is not None:
            params["endpoint"] = endpoint
        if limit is not None:
            params["limit"] = limit
        return self._call("GET", "/requests", params=params)
