"""Fault injection for API calls: what to inject (:class:`FaultConfig`) and, per request, whether to.

Faults stand for what a real network and a real Attentive do now and then: latency, 5xx answers,
HTML error pages from a proxy, connections reset before or after the request was applied, a
gateway timeout answered after the request was applied, and requests that hang. Decisions come from a seeded RNG so a failing run can be replayed exactly.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .endpoints import ENDPOINT_NAMES
from .validation import check_known_settings, check_non_negative, check_shares

__all__ = [
    "AFTER_APPLY_KINDS",
    "APPLY_THEN_5XX_STATUS",
    "FAULT_KINDS",
    "NO_FAULT",
    "FaultConfig",
    "FaultDecision",
    "FaultInjector",
]

FAULT_KINDS: tuple[str, ...] = ("drop", "drop_after_apply", "hang", "error", "non_json", "apply_then_5xx")
#: Kinds that let the request through to be applied and only then spoil the answer.
AFTER_APPLY_KINDS = frozenset({"drop_after_apply", "apply_then_5xx"})
#: The answer of ``apply_then_5xx``: a gateway that timed out after the upstream write.
APPLY_THEN_5XX_STATUS = 504
_RATES = ("error_rate", "drop_rate", "drop_after_apply_rate", "hang_rate", "non_json_rate", "apply_then_5xx_rate")


@dataclass
class FaultConfig:
    """Faults injected into API calls (/v1 and /v2). Rates are probabilities per request and must sum to <= 1.

    ``apply_then_5xx_rate``: the request is applied (a subscription recorded), then answered 504, as a
    gateway that timed out after the write would answer; a client must treat it as in doubt.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    drop_after_apply_rate: float = 0.0
    hang_rate: float = 0.0
    hang_s: float = 30.0
    non_json_rate: float = 0.0
    apply_then_5xx_rate: float = 0.0
    endpoints: list[str] | None = None
    seed: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultConfig:
        """Build and validate a config; raises ``ValueError`` with a readable reason."""
        check_known_settings(data, (f.name for f in fields(cls)), "fault")
        cfg = cls(**{k: v for k, v in data.items() if v is not None or k in ("endpoints", "seed")})
        check_non_negative(cfg, ("latency_ms", "jitter_ms", "hang_s"))
        check_shares(cfg, _RATES, "fault rates")
        if cfg.endpoints is not None:
            if isinstance(cfg.endpoints, str) or not all(isinstance(e, str) for e in cfg.endpoints):
                raise ValueError("endpoints must be a list of endpoint names")
            bad = sorted(set(cfg.endpoints) - set(ENDPOINT_NAMES))
            if bad:
                raise ValueError(f"unknown endpoint(s) {bad}; known: {list(ENDPOINT_NAMES)}")
            cfg.endpoints = list(cfg.endpoints)
        if cfg.seed is not None and (isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int)):
            raise ValueError("seed must be an integer")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def active(self) -> bool:
        return bool(self.latency_ms or self.jitter_ms or any(getattr(self, name) for name in _RATES))


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request: ``kind`` is None or one of :data:`FAULT_KINDS`."""

    kind: str | None
    delay_s: float
    error_status: int = 500


NO_FAULT = FaultDecision(None, 0.0)


class FaultInjector:
    """Draws fault decisions from a seeded RNG so a run can be reproduced request by request."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._endpoints = frozenset(config.endpoints) if config.endpoints is not None else None
        c = config
        # Cumulative thresholds, evaluated against a single uniform draw per request.
        self._thresholds: list[tuple[float, str]] = []
        acc = 0.0
        for rate, kind in (
            (c.drop_rate, "drop"),
            (c.drop_after_apply_rate, "drop_after_apply"),
            (c.hang_rate, "hang"),
            (c.error_rate, "error"),
            (c.non_json_rate, "non_json"),
            # Last, so seeded runs of configurations without it replay as before.
            (c.apply_then_5xx_rate, "apply_then_5xx"),
        ):
            if rate:
                acc += rate
                self._thresholds.append((acc, kind))
        self._active = config.active

    def decide(self, endpoint: str | None) -> FaultDecision:
        if not self._active:
            return NO_FAULT
        if self._endpoints is not None and endpoint not in self._endpoints:
            return NO_FAULT
        c = self.config
        rng = self._rng
        # Always draw the same number of values per request so a seed replays identically
        # whatever mix of fault kinds happens to fire.
        r = rng.random()
        jitter = rng.uniform(-c.jitter_ms, c.jitter_ms) if c.jitter_ms else 0.0
        status = (500, 502, 503)[rng.randrange(3)]
        kind = None
        for threshold, name in self._thresholds:
            if r < threshold:
                kind = name
                break
        delay = max(0.0, c.latency_ms + jitter) / 1000.0
        return FaultDecision(kind, delay, status)
