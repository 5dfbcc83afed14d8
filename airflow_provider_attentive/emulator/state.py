"""In-memory Attentive state and business rules for the local emulator.

Everything here is synchronous and free of I/O so it can be unit tested and so the
server can call it from its single event-loop thread without locks.

Rules are taken from the Attentive v1 API reference (see
``/work/shared/reference/attentive-api.md``); where Attentive does not document a
behaviour the emulator picks the strict option so connector bugs surface locally.
"""

from __future__ import annotations

import base64
import random
import re
import time
import zlib
from collections import Counter, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

# ----------------------------------------------------------------------------------------------
# Endpoints, scopes and limits
# ----------------------------------------------------------------------------------------------

ALL_SCOPES: tuple[str, ...] = (
    "attributes:write",
    "events:write",
    "subscriptions:write",
    "subscriptions:read",
    "identity:write",
)

#: Endpoint name -> OAuth scope required (``None``: any valid key may call it).
ENDPOINT_SCOPES: dict[str, str | None] = {
    "me": None,
    "attributes": "attributes:write",
    # Attentive's GET /v1/attributes/custom is guarded by the *write* scope (spec quirk, kept as is).
    "attributes_read": "attributes:write",
    "events": "events:write",
    "subscribe": "subscriptions:write",
    "unsubscribe": "subscriptions:write",
    "subscriptions_read": "subscriptions:read",
    "identity": "identity:write",
}
ENDPOINTS: tuple[str, ...] = tuple(ENDPOINT_SCOPES)

DEFAULT_LIMIT = 150
DEFAULT_LIMITS: dict[str, int] = {
    name: {"subscribe": 10, "unsubscribe": 5, "identity": 10}.get(name, DEFAULT_LIMIT) for name in ENDPOINTS
}
RATE_WINDOW_S = 1.0

SUBSCRIPTION_TYPES: tuple[str, ...] = ("MARKETING", "TRANSACTIONAL", "CHECKOUT_ABANDONED")
CHANNELS: tuple[str, ...] = ("TEXT", "EMAIL")
OPTED_OUT_MESSAGE = "subscriber has opted out and cannot be re-subscribed through the API"

DEFAULT_SIGN_UP_UNITS: tuple[dict[str, str], ...] = (
    {"id": "emulator-en-US-marketing", "language": "en", "country": "US", "subscriptionType": "MARKETING"},
    {
        "id": "emulator-en-US-transactional",
        "language": "en",
        "country": "US",
        "subscriptionType": "TRANSACTIONAL",
    },
)


class ApiError(Exception):
    """A request the emulated Attentive API rejects; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def mask_key(key: str) -> str:
    """Mask an API key for logs and responses: everything but the last 4 characters is hidden."""
    if len(key) <= 4:
        # Showing "the last 4" of a 4-char key would show all of it.
        return "****"
    return "*" * min(len(key) - 4, 12) + key[-4:]


@dataclass(frozen=True)
class KeySpec:
    """What an emulated API key may do and which company it belongs to.

    ``scopes`` accepts any collection of scope strings and is stored as a frozenset.
    """

    scopes: Collection[str] = ALL_SCOPES
    company_name: str = "Emulated Co"
    application_name: str = "Attentive Emulator"

    def __post_init__(self) -> None:
        if isinstance(self.scopes, str):
            # A bare string would silently become a set of characters.
            raise TypeError("KeySpec.scopes must be a collection of scope names, not a string")
        object.__setattr__(self, "scopes", frozenset(self.scopes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "scopes": sorted(self.scopes),
            "company_name": self.company_name,
            "application_name": self.application_name,
        }

    def me(self) -> dict[str, str]:
        """The GetMeResponseDto for this key, derived deterministically from the company name."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.company_name.lower()).strip("-") or "company"
        number = zlib.crc32(self.company_name.encode()) % 100000
        # Attentive company ids look like base64("07:Company<n>") (e.g. "MDc6Q29tcGFueTI").
        company_id = base64.b64encode(f"07:Company{number}".encode()).decode().rstrip("=")
        return {
            "applicationName": self.application_name,
            "attentiveDomainName": f"{slug}.attn.tv",
            "companyName": self.company_name,
            "contactEmail": f"api@{slug}.example.com",
            "companyId": company_id,
        }


# ----------------------------------------------------------------------------------------------
# Sliding windows
# ----------------------------------------------------------------------------------------------


def max_window(timestamps: Sequence[float], window: float = RATE_WINDOW_S) -> int:
    """Highest number of ``timestamps`` inside any half-open interval ``(t - window, t]``.

    ``timestamps`` must be sorted ascending. Uses the same inclusion test as
    :class:`RateLimiter` (``t - s < window``) so that ``max_window <= limit`` holds exactly
    for accepted requests.
    """
    best = 0
    start = 0
    for end, t in enumerate(timestamps):
        while t - timestamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class WindowTracker:
    """Incremental :func:`max_window` over a stream of non-decreasing timestamps (O(1) amortised)."""

    __slots__ = ("_times", "max", "window")

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self._times: deque[float] = deque()
        self.max = 0

    def add(self, t: float) -> None:
        times = self._times
        times.append(t)
        while t - times[0] >= self.window:
            times.popleft()
        if len(times) > self.max:
            self.max = len(times)


class RateLimiter:
    """Per (API key, endpoint) sliding one-second window over accepted requests."""

    def __init__(self, limits: Mapping[str, int], window: float = RATE_WINDOW_S) -> None:
        self.limits: dict[str, int] = dict(limits)
        self.window = window
        self._buckets: dict[tuple[str, str], deque[float]] = {}

    def limit(self, endpoint: str) -> int:
        return self.limits.get(endpoint, DEFAULT_LIMIT)

    def _bucket(self, key: str, endpoint: str, now: float) -> deque[float]:
        bucket = self._buckets.get((key, endpoint))
        if bucket is None:
            bucket = self._buckets[(key, endpoint)] = deque()
        while bucket and now - bucket[0] >= self.window:
            bucket.popleft()
        return bucket

    def remaining(self, key: str, endpoint: str, now: float) -> int:
        """Requests still allowed in the current window, without consuming one."""
        return max(0, self.limit(endpoint) - len(self._bucket(key, endpoint, now)))

    def acquire(self, key: str, endpoint: str, now: float) -> tuple[bool, int]:
        """Try to admit a request at ``now``; returns (accepted, remaining after this request)."""
        limit = self.limit(endpoint)
        bucket = self._bucket(key, endpoint, now)
        if len(bucket) >= limit:
            return False, 0
        bucket.append(now)
        return True, limit - len(bucket)

    def clear(self) -> None:
        self._buckets.clear()


# ----------------------------------------------------------------------------------------------
# Fault injection
# ----------------------------------------------------------------------------------------------

FAULT_KINDS: tuple[str, ...] = ("drop", "drop_after_apply", "hang", "error", "non_json")


@dataclass
class FaultConfig:
    """Faults injected into /v1 API calls. Rates are probabilities per request and must sum to <= 1."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    drop_after_apply_rate: float = 0.0
    hang_rate: float = 0.0
    hang_s: float = 30.0
    non_json_rate: float = 0.0
    endpoints: list[str] | None = None
    seed: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultConfig:
        """Build and validate a config; raises ``ValueError`` with a readable reason."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        cfg = cls(**{k: v for k, v in data.items() if v is not None or k in ("endpoints", "seed")})
        for name in ("latency_ms", "jitter_ms", "hang_s"):
            value = getattr(cfg, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
        total = 0.0
        for name in ("error_rate", "drop_rate", "drop_after_apply_rate", "hang_rate", "non_json_rate"):
            value = getattr(cfg, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1")
            total += value
        if total > 1 + 1e-9:
            raise ValueError(f"fault rates sum to {total:.3f}; they must sum to at most 1")
        if cfg.endpoints is not None:
            if isinstance(cfg.endpoints, str) or not all(isinstance(e, str) for e in cfg.endpoints):
                raise ValueError("endpoints must be a list of endpoint names")
            bad = sorted(set(cfg.endpoints) - set(ENDPOINTS))
            if bad:
                raise ValueError(f"unknown endpoint(s) {bad}; known: {list(ENDPOINTS)}")
            cfg.endpoints = list(cfg.endpoints)
        if cfg.seed is not None and (isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int)):
            raise ValueError("seed must be an integer")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def active(self) -> bool:
        return bool(
            self.latency_ms
            or self.jitter_ms
            or self.error_rate
            or self.drop_rate
            or self.drop_after_apply_rate
            or self.hang_rate
            or self.non_json_rate
        )


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


# ----------------------------------------------------------------------------------------------
# Validation helpers (the documented rules on top of the OpenAPI schema)
# ----------------------------------------------------------------------------------------------

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<frac>[0-9]+))?(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
EVENT_TYPE_FORBIDDEN = frozenset("\"'(){}[]\\|,")
EVENT_PROPERTY_KEY_FORBIDDEN = frozenset('"{}[]\\|')
MAX_ATTRIBUTE_NAME = 200
MAX_IDENTIFIER_LEN = 100


def is_e164(value: object) -> bool:
    return isinstance(value, str) and _E164.fullmatch(value) is not None


def check_phone(value: object, where: str) -> None:
    if not is_e164(value):
        hint = " (encode '+' as %2B in query strings)" if isinstance(value, str) and value[:1] == " " else ""
        raise ApiError(400, f"{where} must be an E.164 phone number like +13115552368, got {value!r}{hint}")


def parse_rfc3339(value: str) -> datetime | None:
    """Parse an RFC 3339 date-time that carries an explicit offset; None when invalid."""
    m = _RFC3339.fullmatch(value)
    if m is None:
        return None
    frac = (m["frac"] or "")[:6].ljust(6, "0")
    offset = "+00:00" if m["offset"] in ("Z", "z") else m["offset"]
    try:
        return datetime.fromisoformat(f"{m['date']}T{m['time']}.{frac}{offset}")
    except ValueError:
        return None


def _check_event_user(user: Mapping[str, Any]) -> None:
    """EventUser: phone, email or external identifiers; the schema already forbids unknown keys."""
    phone = user.get("phone")
    email = user.get("email")
    ext = user.get("externalIdentifiers") or {}
    has_ext = bool(ext.get("clientUserId")) or bool(ext.get("customIdentifiers"))
    if phone is None and not email and not has_ext:
        raise ApiError(400, "user must include phone, email or externalIdentifiers (clientUserId or customIdentifiers)")
    if phone is not None:
        check_phone(phone, "user.phone")
    if email is not None and not email:
        raise ApiError(400, "user.email must not be empty; omit the field instead")


def _check_sub_user(user: Mapping[str, Any]) -> tuple[str | None, str | None]:
    phone = user.get("phone")
    email = user.get("email")
    if not phone and not email:
        raise ApiError(400, "user must include phone or email")
    if phone is not None:
        check_phone(phone, "user.phone")
    if email is not None and not email:
        raise ApiError(400, "user.email must not be empty; omit the field instead")
    return phone, email


def user_key(user: Mapping[str, Any]) -> str:
    """Record key for a user: phone, else email, else clientUserId, else first custom identifier."""
    if user.get("phone"):
        return str(user["phone"])
    if user.get("email"):
        return str(user["email"])
    ext = user.get("externalIdentifiers") or {}
    if ext.get("clientUserId"):
        return f"clientUserId:{ext['clientUserId']}"
    first = (ext.get("customIdentifiers") or [{}])[0]
    return f"{first.get('name')}:{first.get('value')}"


# ----------------------------------------------------------------------------------------------
# Stats
# ----------------------------------------------------------------------------------------------


class EndpointStats:
    """Counters for one endpoint."""

    __slots__ = ("accepted", "arrivals", "faults", "rate_limited", "requests", "status")

    def __init__(self) -> None:
        self.requests = 0
        self.status: Counter[int] = Counter()
        self.rate_limited = 0
        self.faults: Counter[str] = Counter()
        self.arrivals = WindowTracker()
        self.accepted = WindowTracker()

    def to_dict(self, limit: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "status": {str(code): n for code, n in sorted(self.status.items())},
            "rate_limited": self.rate_limited,
            "max_window": self.accepted.max,
            "max_window_all": self.arrivals.max,
            "limit": limit,
            "faults": {kind: self.faults.get(kind, 0) for kind in FAULT_KINDS},
        }


# ----------------------------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------------------------

REQUEST_LOG_SIZE = 100_000


@dataclass
class _Subscription:
    channel: str
    subscribed: bool
    sign_up_source_id: str | None
    subscribe_requests: int = 0
    unsubscribe_requests: int = 0
    updated_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "subscribed": self.subscribed,
            "sign_up_source_id": self.sign_up_source_id,
            "subscribe_requests": self.subscribe_requests,
            "unsubscribe_requests": self.unsubscribe_requests,
            "updated_at": self.updated_at,
        }


class EmulatorState:
    """All emulated Attentive data plus the configuration that ``reset`` restores.

    Not thread-safe by design: the server only touches it from its event-loop thread.
    """

    def __init__(
        self,
        keys: Mapping[str, KeySpec] | None = None,
        limits: Mapping[str, int] | None = None,
        sign_up_sources: Mapping[str, str] | None = None,
        sign_up_units: Iterable[Mapping[str, str]] | None = None,
    ) -> None:
        self.keys: dict[str, KeySpec] = dict(keys or {})
        self._initial_limits = dict(DEFAULT_LIMITS)
        if limits:
            self._initial_limits.update(validate_limits(limits, self._initial_limits))
        self._initial_sources = validate_sign_up_sources(sign_up_sources or {})
        self._initial_units = validate_sign_up_units(
            sign_up_units if sign_up_units is not None else DEFAULT_SIGN_UP_UNITS
        )
        self.limiter = RateLimiter(self._initial_limits)
        self.reset()

    # -- lifecycle --------------------------------------------------------------------------

    def reset(self) -> None:
        """Clear data, stats and rate-limit windows; restore limits and sign-up config; keep keys."""
        self.limiter.limits = dict(self._initial_limits)
        self.limiter.clear()
        self.sign_up_sources: dict[str, str] = dict(self._initial_sources)
        self.sign_up_units: list[dict[str, str]] = [dict(u) for u in self._initial_units]
        self.attributes: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._event_ids: set[str] = set()
        self.subscriptions: dict[str, dict[str, _Subscription]] = {}
        self.messages: list[dict[str, Any]] = []
        self.identities: list[dict[str, Any]] = []
        self.opted_out: set[str] = set()
        # UI-created enumerated attributes accept only their defined values (Attentive docs, custom attributes).
        self.enumerated_attributes: dict[str, list[Any]] = {}
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.endpoint_stats: dict[str, EndpointStats] = {name: EndpointStats() for name in ENDPOINTS}
        self.not_found = 0
        self.repeat_subscribes = 0
        self.repeat_unsubscribes = 0
        self.duplicate_events = 0

    # -- configuration ----------------------------------------------------------------------

    def add_key(self, key: str, spec: KeySpec) -> None:
        if not key:
            raise ValueError("key must be a non-empty string")
        self.keys[key] = spec

    def remove_key(self, key: str) -> bool:
        return self.keys.pop(key, None) is not None

    def set_limits(self, limits: Mapping[str, int]) -> dict[str, int]:
        self.limiter.limits.update(validate_limits(limits, self.limiter.limits))
        return dict(self.limiter.limits)

    def set_enumerated_attributes(self, attributes: Mapping[str, Any]) -> dict[str, list[Any]]:
        for name, values in attributes.items():
            if not isinstance(name, str) or not isinstance(values, list):
                raise ValueError("enumerated attributes must be {name: [allowed values]}")
        self.enumerated_attributes.update({name: list(values) for name, values in attributes.items()})
        return dict(self.enumerated_attributes)

    def seed_opted_out(self, phones: Iterable[str]) -> None:
        for phone in phones:
            check_phone(phone, "opted-out phone")
            self.opted_out.add(phone)

    # -- inspection -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "endpoints": {name: st.to_dict(self.limiter.limit(name)) for name, st in self.endpoint_stats.items()},
            "not_found": self.not_found,
            "repeat_subscribes": self.repeat_subscribes,
            "repeat_unsubscribes": self.repeat_unsubscribes,
            "duplicate_events": self.duplicate_events,
            "events_stored": len(self.events),
            "messages_sent": len(self.messages),
        }

    def subscriptions_dict(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {
            ident: {stype: sub.to_dict() for stype, sub in subs.items()} for ident, subs in self.subscriptions.items()
        }

    # -- API operations ---------------------------------------------------------------------
    # Each handler applies the documented rules, mutates state and returns (status, body).
    # The OpenAPI schema has already been checked by the caller.

    def post_attributes(self, body: dict[str, Any]) -> tuple[int, Any]:
        user = body["user"]
        _check_event_user(user)
        props = body["properties"]
        for name, value in props.items():
            if len(name) > MAX_ATTRIBUTE_NAME:
                raise ApiError(400, f"attribute name {name[:40]!r}... is {len(name)} characters; the maximum is 200")
            allowed = self.enumerated_attributes.get(name)
            if allowed is not None and value not in allowed:
                raise ApiError(
                    400,
                    f"attribute {name!r} is an enumerated attribute created in the Attentive UI; {value!r} is not "
                    f"one of its values {allowed}",
                )
            if isinstance(value, (list, dict)):
                kind = "arrays" if isinstance(value, list) else "objects"
                raise ApiError(400, f"attribute {name!r}: custom attribute values cannot be {kind}")
        self.attributes.setdefault(user_key(user), {}).update(props)
        return 200, {}

    def get_attributes(self, phone: str | None, email: str | None) -> tuple[int, Any]:
        ident = self._single_query_identifier(phone, email)
        record = self.attributes.get(ident, {})
        return 200, [{"name": k, "value": v} for k, v in record.items()]

    def post_event(self, body: dict[str, Any], received_at: float) -> tuple[int, Any]:
        _check_event_user(body["user"])
        etype = body["type"]
        if not etype.strip():
            raise ApiError(400, "event type must not be empty")
        bad = sorted(set(etype) & EVENT_TYPE_FORBIDDEN)
        if bad:
            raise ApiError(
                400,
                f"event type {etype!r} contains forbidden character(s) {' '.join(bad)}; "
                "not allowed: \" ' ( ) { } [ ] \\ | ,",
            )
        for key in body.get("properties") or {}:
            bad = sorted(set(key) & EVENT_PROPERTY_KEY_FORBIDDEN)
            if bad:
                raise ApiError(
                    400,
                    f"event property key {key!r} contains forbidden character(s) {' '.join(bad)}; "
                    'not allowed: " { } [ ] \\ |',
                )
        occurred = body.get("occurredAt")
        if occurred is not None and parse_rfc3339(occurred) is None:
            raise ApiError(
                400,
                f"occurredAt {occurred!r} is not an RFC 3339 date-time with a UTC offset "
                "(e.g. 2021-03-30T14:38:29.000Z)",
            )
        event_id = body.get("externalEventId")
        if event_id is not None:
            if event_id in self._event_ids:
                # Attentive treats externalEventId as the event's unique id: accept, do not re-store.
                self.duplicate_events += 1
                return 200, {}
            self._event_ids.add(event_id)
        self.events.append({"received_at": received_at, "body": body})
        return 200, {}

    def _subscription_type(self, body: Mapping[str, Any]) -> tuple[str, str | None]:
        source = body.get("signUpSourceId")
        if source:
            return self.sign_up_sources.get(source, "MARKETING"), source
        locale = body.get("locale")
        stype = body.get("subscriptionType")
        if locale is None and stype is None:
            raise ApiError(400, "signUpSourceId is required unless both locale and subscriptionType are given")
        if locale is None or stype is None:
            missing = "subscriptionType" if locale is not None else "locale"
            raise ApiError(400, f"{missing} is required when signUpSourceId is not given")
        language, country = locale.get("language"), locale.get("country")
        if not language or not country:
            raise ApiError(400, "locale needs both language (e.g. 'en') and country (e.g. 'US')")
        matches = [
            u
            for u in self.sign_up_units
            if u["language"] == language and u["country"] == country and u["subscriptionType"] == stype
        ]
        if not matches:
            raise ApiError(
                400, f"no API sign-up unit matches locale {language}-{country} with subscriptionType {stype}"
            )
        if len(matches) > 1:
            raise ApiError(
                400,
                f"{len(matches)} API sign-up units match locale {language}-{country} with "
                f"subscriptionType {stype}; exactly one must match",
            )
        return stype, matches[0].get("id")

    def post_subscribe(self, body: dict[str, Any], company: str) -> tuple[int, Any]:
        phone, email = _check_sub_user(body["user"])
        stype, source = self._subscription_type(body)
        if phone and phone in self.opted_out:
            raise ApiError(400, OPTED_OUT_MESSAGE)
        single_opt_in = bool(body.get("singleOptIn"))
        responses = []
        now = time.time()
        for channel, ident in (("TEXT", phone), ("EMAIL", email)):
            if not ident:
                continue
            subs = self.subscriptions.setdefault(ident, {})
            sub = subs.get(stype)
            if sub is not None and sub.subscribed:
                status = "PREVIOUSLY_CREATED"
                self.repeat_subscribes += 1
                if channel == "TEXT":
                    self._message(channel, ident, "already_subscribed", stype, company, now)
            else:
                status = "NEWLY_CREATED"
                if sub is None:
                    sub = subs[stype] = _Subscription(channel, True, source)
                sub.subscribed = True
                sub.sign_up_source_id = source
                if channel == "TEXT" and not single_opt_in:
                    self._message(channel, ident, "opt_in_confirmation", stype, company, now)
            sub.subscribe_requests += 1
            sub.updated_at = now
            responses.append(
                {"subscription": {"type": stype, "channel": channel}, "subscriptionCreationStatus": status}
            )
        result: dict[str, Any] = {"user": _user_echo(phone, email)}
        if body.get("externalIdentifiers") is not None:
            result["externalIdentifiers"] = body["externalIdentifiers"]
        result["subscriptionResponses"] = responses
        return 202, result

    def post_unsubscribe(self, body: dict[str, Any], company: str) -> tuple[int, Any]:
        phone, email = _check_sub_user(body["user"])
        wanted = body.get("subscriptions")
        if wanted is not None:
            for i, item in enumerate(wanted):
                if not item.get("type") or not item.get("channel"):
                    raise ApiError(400, f"subscriptions[{i}] needs both type and channel")
        notify = not bool((body.get("notification") or {}).get("disabled"))
        responses = []
        now = time.time()
        for channel, ident in (("TEXT", phone), ("EMAIL", email)):
            if not ident:
                continue
            subs = self.subscriptions.get(ident, {})
            # No list means "everything this identifier has" on its own channel.
            types = list(subs) if wanted is None else [i["type"] for i in wanted if i["channel"] == channel]
            touched = False
            for stype in dict.fromkeys(types):
                sub = subs.get(stype)
                if sub is None:
                    # Only existing subscriptions appear in Attentive's answer.
                    continue
                if sub.subscribed:
                    status = "NEWLY_UNSUBSCRIBED"
                    sub.subscribed = False
                else:
                    status = "PREVIOUSLY_UNSUBSCRIBED"
                    self.repeat_unsubscribes += 1
                sub.unsubscribe_requests += 1
                sub.updated_at = now
                touched = True
                responses.append(
                    {
                        "subscription": {"type": stype, "channel": channel},
                        "subscriptionUnsubscribeStatus": status,
                    }
                )
            if touched and channel == "TEXT" and notify:
                self._message(channel, ident, "unsubscribed", None, company, now)
        return 202, {"user": _user_echo(phone, email), "subscriptionResponses": responses}

    def get_subscriptions(self, phone: str | None, email: str | None) -> tuple[int, Any]:
        ident = self._single_query_identifier(phone, email)
        channel = "TEXT" if phone is not None else "EMAIL"
        subs = self.subscriptions.get(ident, {})
        types = ["MARKETING", "TRANSACTIONAL", *[t for t in subs if t not in ("MARKETING", "TRANSACTIONAL")]]
        return 200, {
            "subscriptionEligibilities": [
                {
                    "subscription": {"type": stype, "channel": channel},
                    "eligibility": {"isEligible": bool(subs.get(stype) and subs[stype].subscribed)},
                }
                for stype in types
            ]
        }

    def post_identity(self, body: dict[str, Any], received_at: float) -> tuple[int, Any]:
        if body.get("phone") is not None:
            check_phone(body["phone"], "phone")
        for name in ("email", "shopifyId", "klaviyoId", "clientUserId"):
            value = body.get(name)
            if value is not None and len(value) > MAX_IDENTIFIER_LEN:
                raise ApiError(400, f"{name} exceeds the {MAX_IDENTIFIER_LEN} character limit")
            if value is not None and not value:
                raise ApiError(400, f"{name} must not be empty; omit the field instead")
        customs = body.get("customIdentifiers") or []
        for i, item in enumerate(customs):
            if len(item["value"]) > MAX_IDENTIFIER_LEN:
                raise ApiError(400, f"customIdentifiers[{i}].value exceeds the {MAX_IDENTIFIER_LEN} character limit")
        count = sum(1 for n in ("phone", "email", "shopifyId", "klaviyoId", "clientUserId") if body.get(n))
        count += len(customs)
        if count == 0:
            raise ApiError(400, "at least one identifier (phone, email, shopifyId, klaviyoId, ...) is required")
        if (body.get("clientUserId") or customs) and count < 2:
            raise ApiError(400, "a clientUserId or custom identifier must be accompanied by another identifier")
        self.identities.append({"received_at": received_at, "body": body})
        return 202, None

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _single_query_identifier(phone: str | None, email: str | None) -> str:
        if (phone is None) == (email is None):
            raise ApiError(400, "include exactly one query parameter: phone or email")
        if phone is not None:
            check_phone(phone, "phone")
            return phone
        assert email is not None
        if not email:
            raise ApiError(400, "email must not be empty")
        return email

    def _message(self, channel: str, to: str, kind: str, stype: str | None, company: str, now: float) -> None:
        kind_label = (stype or "").lower()
        text = {
            "opt_in_confirmation": f"{company}: Reply Y to confirm your subscription to {kind_label} "
            "messages. Msg & data rates may apply. Reply STOP to cancel.",
            "already_subscribed": f"{company}: You are already subscribed to {kind_label} messages. "
            "Reply STOP to cancel.",
            "unsubscribed": f"{company}: You have been unsubscribed and will no longer receive messages.",
        }[kind]
        self.messages.append(
            {"channel": channel, "to": to, "kind": kind, "subscription_type": stype, "text": text, "sent_at": now}
        )


def _user_echo(phone: str | None, email: str | None) -> dict[str, str]:
    user = {}
    if phone:
        user["phone"] = phone
    if email:
        user["email"] = email
    return user


def validate_limits(limits: Mapping[str, Any], current: Mapping[str, int]) -> dict[str, int]:
    """Check a limits update; ``"*"`` sets every endpoint. Raises ``ValueError``."""
    out: dict[str, int] = {}
    for name, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"limit for {name!r} must be a non-negative integer")
        if name == "*":
            out.update(dict.fromkeys(current, value))
        elif name in ENDPOINT_SCOPES:
            out[name] = value
        else:
            raise ValueError(f"unknown endpoint {name!r}; known: {list(ENDPOINTS)}")
    return out


def validate_sign_up_sources(sources: Mapping[str, Any]) -> dict[str, str]:
    """signUpSourceId -> subscription type. Raises ``ValueError``."""
    out: dict[str, str] = {}
    for source, stype in sources.items():
        if stype not in SUBSCRIPTION_TYPES:
            raise ValueError(f"sign-up source {source!r}: type must be one of {list(SUBSCRIPTION_TYPES)}")
        out[str(source)] = stype
    return out


def validate_sign_up_units(units: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """API sign-up units used to resolve the (locale, subscriptionType) subscribe variant."""
    out = []
    for i, unit in enumerate(units):
        missing = [k for k in ("language", "country", "subscriptionType") if not unit.get(k)]
        if missing:
            raise ValueError(f"sign-up unit {i} is missing {', '.join(missing)}")
        if unit["subscriptionType"] not in ("MARKETING", "TRANSACTIONAL"):
            raise ValueError(f"sign-up unit {i}: subscriptionType must be MARKETING or TRANSACTIONAL")
        out.append({"id": str(unit.get("id") or f"unit-{i}"), **{k: str(unit[k]) for k in unit if k != "id"}})
    return out
