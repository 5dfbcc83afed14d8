"""The three Attentive object types: how a source row maps to a request body, and what counts as a change.

Each object type turns a row into:

* a primary key and a *row hash* (cheap: no phone parsing), which the engine compares with the state table
  to find unchanged rows without any validation work; the hash covers the mapped values and the sync's
  configuration, so changing the mapping or the region re-sends everything once;
* on demand, a validated, normalised request body (:meth:`ObjectType.prepare`), or the reason it is invalid.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_attentive.sync.errors import SyncConfigError
from airflow_provider_attentive.sync.values import (
    InvalidValue,
    canonical,
    dumps,
    json_value,
    looks_like_card_digits,
    normalize_email,
    normalize_identifier,
    normalize_phone,
    scalar,
    sensitive_name,
    sensitive_value,
)

IDENTIFIER_FIELDS = ("phone", "email", "client_user_id")
ATTRIBUTE_NAME_MAX = 200
STALE_AFTER = dt.timedelta(hours=12)
# Attentive's REST docs forbid these in event types and property keys; the GraphQL docs add ' and , for keys,
# so we refuse the union: a key Attentive might reject is cheaper to fix here than to find in a journey.
_TYPE_FORBIDDEN = set("\"'(){}[]\\|,")
_PROPERTY_KEY_FORBIDDEN = set("\"'{}[]\\|,")
_EVENT_NAMESPACE = uuid.UUID("0c4d7a5e-0b47-4a2b-9a35-6c6f2f0e8a11")


@dataclass
class Prepared:
    """A row ready to send."""

    payload: dict[str, Any]
    identity: dict[str, str] = field(default_factory=dict)
    stale: bool = False
    names: dict[str, str] = field(default_factory=dict)  # subscriber first/last name, sent as attributes
    note: str | None = None  # a non-fatal problem (e.g. an invalid email dropped)


@dataclass
class Invalid:
    """A row that must not be sent, and why (never containing the phone or email in clear)."""

    reason: str
    sensitive: bool = False
    # Not an error: the row has nothing to send (every attribute NULL). Counted apart from invalid rows.
    empty: bool = False


# Fields whose values identify or describe the event rather than being stored as data.
_NOT_VALUES = frozenset({"phone", "email", "client_user_id", "type", "timestamp"})


def _match_column(columns: Sequence[str], wanted: str) -> str | None:
    """Exact match first, then case-insensitive: Snowflake and Oracle return upper-case column names."""
    if wanted in columns:
        return wanted
    lowered = [c for c in columns if c.lower() == wanted.lower()]
    return lowered[0] if len(lowered) == 1 else None


def _shown_columns(columns: Sequence[str], limit: int = 40) -> str:
    """The model's columns for an error message; a wide model is cut short."""
    if len(columns) <= limit:
        return repr(list(columns))
    return repr(list(columns[:limit]))[:-1] + f", ... ({len(columns) - limit} more)]"


def _simple(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _guess_column(columns: Sequence[str], *wanted: str) -> str:
    """The column most likely meant as ``wanted`` (e.g. 'Phone Number' for phone), for an example in a message."""
    hints = {"phone": ("phone", "mobile", "msisdn", "sms", "cell"), "email": ("mail",)}
    for field_name in wanted:
        for column in columns:
            if any(hint in _simple(column) for hint in hints.get(field_name, (field_name,))):
                return column
    return "<column>"


def key_text(value: Any) -> str:
    """The primary key as text, identical across runs and drivers (1, 1.0 and Decimal('1') agree)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "is_finite") and hasattr(value, "to_integral_value"):  # Decimal
        if value.is_finite() and value == value.to_integral_value():
            return str(int(value))
        return str(value.normalize())
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return str(value)


class ObjectType:
    """Base class: column resolution, the primary key and the row hash."""

    object_type: str = ""
    endpoint: str = ""

    def __init__(
        self,
        *,
        primary_key: str,
        mapping: Mapping[str, str] | None,
        default_region: str | None,
        allow_sensitive: Sequence[str] = (),
    ) -> None:
        if not primary_key or not isinstance(primary_key, str):
            raise SyncConfigError("primary_key must name one column of the query")
        if mapping is not None and not isinstance(mapping, Mapping):
            raise SyncConfigError("mapping must be a dict of {source_column: destination_field}")
        if default_region is not None and (not isinstance(default_region, str) or len(default_region) != 2):
            raise SyncConfigError(f"default_region must be a two-letter region such as 'US', got {default_region!r}")
        self.primary_key = primary_key
        self.mapping = dict(mapping) if mapping is not None else None
        self.default_region = default_region.upper() if default_region else None
        self.allow_sensitive = {c.lower() for c in allow_sensitive}
        self.columns: list[str] = []
        self.pk_index = -1
        # (column index, destination field) pairs, in a stable order, resolved by configure()
        self.fields: list[tuple[int, str]] = []
        self._fingerprint = ""
        self._hash_order: list[int] = []
        self.field_index: dict[str, int] = {}

    # -- configuration ------------------------------------------------------------------------------------

    def configure(self, columns: Sequence[str]) -> None:
        """Resolve the mapping against the query's columns; raise :class:`SyncConfigError` on any problem."""
        self.columns = list(columns)
        pk = _match_column(self.columns, self.primary_key)
        if pk is None:
            raise SyncConfigError(
                f"primary_key {self.primary_key!r} is not a column of the query; columns are {self.columns}"
            )
        self.pk_index = self.columns.index(pk)
        if self.mapping is None:
            pairs = self.default_mapping(pk)
        else:
            pairs = []
            for source, dest in self.mapping.items():
                col = _match_column(self.columns, source)
                if col is None:
                    raise SyncConfigError(
                        f"mapping refers to column {source!r}, which the query does not return; "
                        f"columns are {self.columns}"
                    )
                if not isinstance(dest, str) or not dest.strip():
                    raise SyncConfigError(f"mapping for column {source!r} must name a destination field")
                pairs.append((col, dest))
        destinations = [d for _, d in pairs]
        dupes = sorted({d for d in destinations if destinations.count(d) > 1})
        if dupes:
            raise SyncConfigError(f"several columns map to the same destination field: {dupes}")
        for col, dest in pairs:
            self.check_destination(col, dest)
        self.fields = [(self.columns.index(col), dest) for col, dest in pairs]
        self.field_index = {dest: i for i, dest in self.fields}  # read per row: looked up once here
        self.check_fields()
        # Sorted: writing the same mapping in another order is the same sync and must not resend every row.
        self._hash_order = [i for i, _ in sorted(self.fields, key=lambda field: field[1])]
        self._fingerprint = dumps(
            [self.object_type, self.fingerprint_extra(), self.default_region, sorted(destinations)]
        )

    def default_mapping(self, pk_column: str) -> list[tuple[str, str]]:
        raise NotImplementedError

    def check_destination(self, column: str, dest: str) -> None:
        """Validate one mapped destination field (overridden per object type)."""

    def check_fields(self) -> None:
        """Validate the mapping as a whole (overridden per object type)."""

    def fingerprint_extra(self) -> Any:
        return None

    def check_sensitive_name(self, column: str, dest: str) -> None:
        for name in (column, dest):
            if sensitive_name(name) and column.lower() not in self.allow_sensitive:
                raise SyncConfigError(
                    f"column {column!r} (-> {dest!r}) looks like sensitive data (SSN, payment card or health "
                    "information), which Attentive's terms prohibit. If it is not, allow it explicitly with "
                    f"allow_sensitive_columns=[{column!r}]."
                )

    # -- per row ---------------------------------------------------------------------------------------------

    @property
    def key_index(self) -> int:
        """The column each row's state key comes from: the primary key (the phone, for subscriptions)."""
        return self.pk_index

    def key_from_value(self, value: Any) -> str | None:
        """The state key for a value of the key column; None when the row has no usable key."""
        return None if value is None else key_text(value)

    def key_of(self, row: Sequence[Any]) -> str | None:
        return self.key_from_value(row[self.key_index])

    def key_problem(self, row: Sequence[Any]) -> tuple[str | None, str]:
        """Why ``key_of(row)`` is None: the key to report the row under, and the reason."""
        return None, "primary key is NULL"

    @property
    def shared_keys_allowed(self) -> bool:
        """Whether two rows may share one state key (one subscriber behind two customer rows)."""
        return False

    def row_hash(self, row: Sequence[Any]) -> str:
        body = dumps([self._fingerprint, [canonical(row[i]) for i in self._hash_order]])
        return hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        raise NotImplementedError

    def _no_identifier_message(self) -> str:
        columns = _shown_columns(self.columns)
        if self.mapping is None:
            guess = _guess_column(self.columns, "phone", "email")
            dest = "email" if "mail" in _simple(guess) else "phone"
            return (
                f"no identifier column: the model's columns are {columns}; with mapping=None columns are matched "
                "by name, so one must be called phone, email or client_user_id (any letter case): alias it in "
                f"the sql or pass a mapping of every column to send, such as mapping={{{guess!r}: {dest!r}, ...}}"
            )
        return (
            "no identifier column: the mapping sends none to phone, email or client_user_id; "
            f"the model's columns are {columns}"
        )

    def card_columns(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        """Columns sent as values where most of ``rows`` hold bare digits that pass as card numbers.

        Checked on the first chunk, before anything is sent: a real card column passes almost always, a column
        of ids about one time in ten.
        """
        flagged = []
        for i, dest in self.fields:
            column = self.columns[i]
            if dest in _NOT_VALUES or column.lower() in self.allow_sensitive:
                continue
            values = [row[i] for row in rows if row[i] is not None]
            hits = sum(1 for v in values if looks_like_card_digits(v))
            if hits >= 2 and hits >= 0.8 * len(values):
                flagged.append(f"{column!r} ({hits} of {len(values)} values)")
        return flagged

    def _sensitive_in(self, column_index: int, obj: Any, path: str = "") -> Invalid | None:
        """``_sensitive`` for every key and value inside a JSON column (properties of an event)."""
        if self.columns[column_index].lower() in self.allow_sensitive:
            return None
        if isinstance(obj, Mapping):
            for name, value in obj.items():
                where = f"{path}.{name}" if path else str(name)
                if sensitive_name(str(name)):
                    return Invalid(
                        f"column {self.columns[column_index]!r} holds a property {where!r} that looks like "
                        "sensitive data (SSN, payment card or health), which Attentive's terms prohibit; not sent",
                        sensitive=True,
                    )
                bad = self._sensitive_in(column_index, value, where)
                if bad:
                    return bad
            return None
        if isinstance(obj, list):
            for value in obj:
                bad = self._sensitive_in(column_index, value, path)
                if bad:
                    return bad
            return None
        return self._sensitive(column_index, obj)

    def _sensitive(self, column_index: int, value: Any) -> Invalid | None:
        kind = sensitive_value(value)
        if kind and self.columns[column_index].lower() not in self.allow_sensitive:
            return Invalid(
                f"column {self.columns[column_index]!r} holds what looks like a {kind}, which Attentive's terms "
                "prohibit; not sent",
                sensitive=True,
            )
        return None

    def _user(self, row: Sequence[Any]) -> tuple[dict[str, Any], str | None] | Invalid:
        """Build Attentive's ``user`` object from the identifier fields: phone, email, clientUserId."""
        user: dict[str, Any] = {}
        note = None
        email_problem = None
        for i, dest in self.fields:
            value = row[i]
            if value is None:
                continue
            try:
                if dest == "phone":
                    user["phone"] = normalize_phone(value, self.default_region)
                elif dest == "email":
                    try:
                        user["email"] = normalize_email(value)
                    except InvalidValue as exc:
                        email_problem = str(exc)
                elif dest == "client_user_id":
                    user.setdefault("externalIdentifiers", {})["clientUserId"] = normalize_identifier(
                        value, "client_user_id"
                    )
            except InvalidValue as exc:
                return Invalid(str(exc))
        if email_problem:
            if "phone" not in user:
                return Invalid(email_problem + " and the row has no phone")
            note = email_problem + "; sent without it"
        if not user:
            return Invalid("no identifier: phone, email and client_user_id are all empty")
        return user, note


class AttributesType(ObjectType):
    """Custom attributes (Upsert): one ``POST /v1/attributes/custom`` per row."""

    object_type = "attributes"
    endpoint = "attributes"

    def default_mapping(self, pk_column: str) -> list[tuple[str, str]]:
        pairs = []
        for col in self.columns:
            if col.lower() in IDENTIFIER_FIELDS:
                pairs.append((col, col.lower()))
            elif col != pk_column:
                pairs.append((col, col))
        return pairs

    def check_destination(self, column: str, dest: str) -> None:
        if dest in IDENTIFIER_FIELDS:
            return
        if len(dest) > ATTRIBUTE_NAME_MAX:
            raise SyncConfigError(
                f"attribute name {dest[:40]!r}... is {len(dest)} characters; Attentive allows at most "
                f"{ATTRIBUTE_NAME_MAX}"
            )
        self.check_sensitive_name(column, dest)

    def check_fields(self) -> None:
        dests = {d for _, d in self.fields}
        if not dests & set(IDENTIFIER_FIELDS):
            raise SyncConfigError(self._no_identifier_message())
        if not dests - set(IDENTIFIER_FIELDS):
            raise SyncConfigError("no attribute columns are mapped; there is nothing to sync")

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        user = self._user(row)
        if isinstance(user, Invalid):
            return user
        user_obj, note = user
        properties: dict[str, Any] = {}
        for i, dest in self.fields:
            if dest in IDENTIFIER_FIELDS:
                continue
            value = row[i]
            if value is None:
                continue  # NULL means "no value": never sent as null or ""
            bad = self._sensitive(i, value)
            if bad:
                return bad
            try:
                properties[dest] = scalar(value, dest)
            except InvalidValue as exc:
                return Invalid(str(exc))
        if not properties:
            return Invalid("every attribute is NULL; nothing to send", empty=True)
        return Prepared(payload={"properties": properties, "user": user_obj}, note=note)


class EventsType(ObjectType):
    """Custom events (Insert): one ``POST /v1/events/custom`` per primary key, ever."""

    object_type = "events"
    endpoint = "events"

    def __init__(
        self,
        *,
        sync_id: str,
        event_type: str | None,
        skip_stale: bool = False,
        now: dt.datetime | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if event_type is not None:
            _check_event_type(event_type, config=True)
        self.sync_id = sync_id
        self.event_type = event_type
        self.skip_stale = skip_stale
        self.now = now or dt.datetime.now(dt.timezone.utc)

    def fingerprint_extra(self) -> Any:
        return self.event_type

    def default_mapping(self, pk_column: str) -> list[tuple[str, str]]:
        pairs = []
        for col in self.columns:
            low = col.lower()
            if low in IDENTIFIER_FIELDS:
                pairs.append((col, low))
            elif low == "type":
                pairs.append((col, "type"))
            elif low in ("timestamp", "occurred_at", "occurredat"):
                pairs.append((col, "timestamp"))
            elif low == "properties":
                pairs.append((col, "properties"))
            elif col != pk_column:
                pairs.append((col, f"properties.{col}"))
        return pairs

    def check_destination(self, column: str, dest: str) -> None:
        if dest in (*IDENTIFIER_FIELDS, "type", "timestamp", "properties"):
            if dest == "properties":
                self.check_sensitive_name(column, dest)
            return
        if dest.startswith("properties."):
            prop = dest[len("properties.") :]
            if not prop:
                raise SyncConfigError(f"mapping for column {column!r} names an empty property key")
            bad = _PROPERTY_KEY_FORBIDDEN & set(prop)
            if bad:
                raise SyncConfigError(
                    f"event property key {prop!r} contains {''.join(sorted(bad))!r}, which Attentive forbids"
                )
            self.check_sensitive_name(column, prop)
            return
        raise SyncConfigError(
            f"column {column!r} maps to {dest!r}, which is not an event field; use phone, email, "
            "client_user_id, type, timestamp, properties or properties.<key>"
        )

    def check_fields(self) -> None:
        dests = {d for _, d in self.fields}
        if not dests & set(IDENTIFIER_FIELDS):
            raise SyncConfigError(self._no_identifier_message())
        if "type" in dests and self.event_type is not None:
            raise SyncConfigError("give the event type either as event_type or as a column mapped to 'type', not both")
        if "type" not in dests and self.event_type is None:
            raise SyncConfigError("events need a type: pass event_type='Order Shipped' or map a column to 'type'")

    def external_event_id(self, key: str) -> str:
        """Deterministic per (sync, key): a resend is recognisably the same event."""
        return str(uuid.uuid5(_EVENT_NAMESPACE, f"{self.sync_id}\x1f{key}"))

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        user = self._user(row)
        if isinstance(user, Invalid):
            return user
        user_obj, note = user
        event_type = self.event_type
        occurred: dt.datetime | None = None
        properties: dict[str, Any] = {}
        singles: dict[str, Any] = {}
        for i, dest in self.fields:
            value = row[i]
            if dest == "type":
                if value is None or (isinstance(value, str) and not value.strip()):
                    return Invalid("event type is missing")
                try:
                    event_type = _check_event_type(str(value))
                except InvalidValue as exc:
                    return Invalid(str(exc))
            elif dest == "timestamp":
                if value is None:
                    continue
                try:
                    occurred = parse_timestamp(value)
                    occurred.astimezone(dt.timezone.utc)  # 0001-01-01 with a positive offset has no UTC time
                except InvalidValue as exc:
                    return Invalid(str(exc))
                except (OverflowError, ValueError):
                    return Invalid(f"timestamp {str(value)[:40]!r} is out of range")
            elif dest == "properties":
                if value is None:
                    continue
                try:
                    obj = json.loads(value) if isinstance(value, str | bytes) else value
                except ValueError:
                    return Invalid(f"column {self.columns[i]!r} is not valid JSON")
                if not isinstance(obj, Mapping):
                    return Invalid(f"column {self.columns[i]!r} must hold a JSON object of properties")
                bad = self._sensitive_in(i, obj)
                if bad:
                    return bad
                try:
                    properties.update(json_value(obj, "properties"))
                except InvalidValue as exc:
                    return Invalid(str(exc))
            elif dest.startswith("properties."):
                if value is None:
                    continue
                bad = self._sensitive(i, value)
                if bad:
                    return bad
                name = dest[len("properties.") :]
                try:
                    singles[name] = json_value(value, name)
                except InvalidValue as exc:
                    return Invalid(str(exc))
        properties.update(singles)
        for prop in properties:
            bad_chars = _PROPERTY_KEY_FORBIDDEN & set(prop)
            if bad_chars or not prop:
                return Invalid(f"property key {prop[:60]!r} is empty or contains characters Attentive forbids")
        if event_type is None:  # pragma: no cover - check_fields guarantees a source of type
            return Invalid("event type is missing")
        payload: dict[str, Any] = {
            "type": event_type,
            "user": user_obj,
            "externalEventId": self.external_event_id(key),
        }
        if properties:
            payload["properties"] = properties
        stale = False
        if occurred is not None:
            payload["occurredAt"] = rfc3339(occurred)
            stale = occurred < self.now - STALE_AFTER
        try:
            dumps(payload)
        except ValueError:
            return Invalid("a property value is not representable in JSON (NaN or infinity)")
        return Prepared(payload=payload, stale=stale, note=note)


def _check_event_type(value: str, *, config: bool = False) -> str:
    problem = None
    if not value.strip():
        problem = "event type is empty"
    elif _TYPE_FORBIDDEN & set(value):
        bad = "".join(sorted(_TYPE_FORBIDDEN & set(value)))
        problem = f"event type {value[:60]!r} contains {bad!r}, which Attentive forbids"
    elif len(value) > 255:
        problem = "event type is longer than 255 characters"
    if problem:
        if config:
            raise SyncConfigError(problem)
        raise InvalidValue(problem)
    return value


def parse_timestamp(value: Any) -> dt.datetime:
    """Datetimes, dates, ISO 8601 text and epoch seconds/milliseconds (as numbers or digit-only text, as
    SQLite often stores them); naive values are UTC."""
    if isinstance(value, dt.datetime):
        result = value
    elif isinstance(value, dt.date):
        result = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool):
        result = _from_epoch(value)
    elif isinstance(value, str):
        text = value.strip()
        if _DIGITS.fullmatch(text) and len(text) in _EPOCH_DIGITS:
            return _from_epoch(int(text))
        try:
            result = dt.datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
        except ValueError:
            if _DIGITS.fullmatch(text):
                raise InvalidValue(_epoch_digits_problem(text[:40], len(text))) from None
            raise InvalidValue(f"timestamp {text[:40]!r} is not ISO 8601") from None
    else:
        raise InvalidValue(f"timestamp has unsupported type {type(value).__name__}")
    if result.tzinfo is None:
        result = result.replace(tzinfo=dt.timezone.utc)
    return result


_DIGITS = re.compile(r"[0-9]+")
_SECONDS_DIGITS = (9, 10)  # 1973-03-03 to 2286-11-20
_MILLIS_DIGITS = (12, 13)
_EPOCH_DIGITS = _SECONDS_DIGITS + _MILLIS_DIGITS
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _from_epoch(value: int | float | decimal.Decimal) -> dt.datetime:
    """Epoch seconds or milliseconds, told apart by their number of digits.

    Other lengths are refused rather than guessed: 11 digits could be either unit, and shorter numbers are
    more likely a date written as a number (20260101) or a placeholder (0) than a moment worth an event.
    """
    try:
        number = float(value)
    except ValueError:  # a signalling Decimal NaN
        number = math.nan
    if not math.isfinite(number):
        raise InvalidValue("timestamp is not a finite number")
    digits = len(str(int(abs(number))))
    if number >= 0 and digits in _SECONDS_DIGITS:
        return _EPOCH + dt.timedelta(seconds=number)
    if number >= 0 and digits in _MILLIS_DIGITS:
        return _EPOCH + dt.timedelta(milliseconds=number)
    raise InvalidValue(_epoch_digits_problem(str(value)[:40], digits, negative=number < 0))


def _epoch_digits_problem(shown: str, digits: int, *, negative: bool = False) -> str:
    what = "negative" if negative else f"{digits} digit{'' if digits == 1 else 's'} long"
    return (
        f"timestamp {shown!r} is a number but not a Unix epoch time: it is {what}, while epoch seconds have 9 "
        "or 10 digits and epoch milliseconds 12 or 13; send other dates as ISO 8601 text or a date/time column"
    )


def rfc3339(moment: dt.datetime) -> str:
    """RFC 3339 with an explicit UTC offset, as Attentive requires for ``occurredAt``."""
    text = moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


_LOCALE = re.compile(r"^([a-z]{2})[-_]([A-Z]{2})$")


class SubscriptionsType(ObjectType):
    """Subscribers (Add / Remove / Mirror): ``POST /v1/subscriptions`` and ``.../unsubscribe``."""

    object_type = "subscriptions"
    endpoint = "subscribe"

    def __init__(
        self,
        *,
        sign_up_source_id: str | None,
        locale: str | None,
        subscription_type: str,
        single_opt_in: bool,
        notify_on_unsubscribe: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if subscription_type not in ("MARKETING", "TRANSACTIONAL"):
            raise SyncConfigError(f"subscription_type must be MARKETING or TRANSACTIONAL, got {subscription_type!r}")
        if bool(sign_up_source_id) == bool(locale):
            raise SyncConfigError(
                "give exactly one of sign_up_source_id (from Attentive's Sign-up Units tab) or locale "
                "(e.g. 'en-US', with subscription_type)"
            )
        self.locale: dict[str, str] | None = None
        if locale:
            m = _LOCALE.match(locale)
            if not m:
                raise SyncConfigError(f"locale must look like 'en-US', got {locale!r}")
            self.locale = {"language": m.group(1), "country": m.group(2)}
        self.sign_up_source_id = str(sign_up_source_id) if sign_up_source_id else None
        self.subscription_type = subscription_type
        self.single_opt_in = bool(single_opt_in)
        self.notify_on_unsubscribe = bool(notify_on_unsubscribe)

    def fingerprint_extra(self) -> Any:
        return [self.sign_up_source_id, self.locale, self.subscription_type]

    # Membership is tracked per person, and Attentive knows a person by phone: keyed by the primary key,
    # a reformatted phone ("(415) 555-0111" then "+14155550111") would subscribe the person again and then
    # unsubscribe them as "left the model"; two customer rows sharing a phone would subscribe it twice, and a
    # customer whose phone changed would never have the new number subscribed. Keyed by the E.164 phone, all
    # three are right: one subscriber, and a changed number is one joining and one leaving.

    @property
    def key_index(self) -> int:
        return self.field_index["phone"]

    def key_from_value(self, value: Any) -> str | None:
        if value is None:
            return None
        try:
            return normalize_phone(value, self.default_region)
        except InvalidValue:
            return None

    def key_problem(self, row: Sequence[Any]) -> tuple[str | None, str]:
        pk = row[self.pk_index]
        shown = None if pk is None else key_text(pk)
        if shown is not None and self.pk_index == self.key_index:
            # The key is the unusable phone itself: too malformed for mask_key to see a phone, still private.
            shown = re.sub(r"\d(?=(?:\D*\d){2})", "*", shown)
        value = row[self.key_index]
        if value is None:
            return shown, "phone is missing"
        try:
            normalize_phone(value, self.default_region)
        except InvalidValue as exc:
            return shown, str(exc)
        return shown, "phone is not usable"

    @property
    def shared_keys_allowed(self) -> bool:
        return True

    def default_mapping(self, pk_column: str) -> list[tuple[str, str]]:
        known = ("phone", "email", "first_name", "last_name")
        return [(col, col.lower()) for col in self.columns if col.lower() in known]

    def check_destination(self, column: str, dest: str) -> None:
        if dest not in ("phone", "email", "first_name", "last_name"):
            raise SyncConfigError(
                f"column {column!r} maps to {dest!r}; subscriptions take phone, email, first_name and last_name"
            )

    def check_fields(self) -> None:
        if "phone" not in {d for _, d in self.fields}:
            columns = _shown_columns(self.columns)
            if self.mapping is None:
                raise SyncConfigError(
                    f"subscriptions need a phone column: the model's columns are {columns}; with mapping=None "
                    "columns are matched by name, so one must be called phone (any letter case; email, first_name "
                    "and last_name likewise): alias it in the sql or pass "
                    f"mapping={{{_guess_column(self.columns, 'phone')!r}: 'phone'}}"
                )
            raise SyncConfigError(
                f"subscriptions need a phone column: the mapping sends none to 'phone'; the model's columns are "
                f"{columns}"
            )

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        identity: dict[str, str] = {}
        names: dict[str, str] = {}
        note = None
        for i, dest in self.fields:
            value = row[i]
            if dest == "phone":
                try:
                    identity["phone"] = normalize_phone(value, self.default_region)
                except InvalidValue as exc:
                    return Invalid(str(exc))
            elif dest == "email" and value is not None:
                try:
                    identity["email"] = normalize_email(value)
                except InvalidValue as exc:
                    note = f"{exc}; subscribed by phone only"
            elif dest in ("first_name", "last_name") and value is not None:
                text = str(value).strip()
                if text:
                    names["firstName" if dest == "first_name" else "lastName"] = text[:255]
        payload = self.subscribe_body(identity)
        # Kept with the membership: a later run can tell that a member whose phone it cannot read is still there.
        identity["pk"] = key_text(row[self.pk_index])
        return Prepared(payload=payload, identity=identity, names=names, note=note)

    def subscribe_body(self, identity: Mapping[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = {"user": {k: identity[k] for k in ("phone", "email") if identity.get(k)}}
        if self.sign_up_source_id:
            body["signUpSourceId"] = self.sign_up_source_id
        else:
            body["locale"] = dict(self.locale or {})
            body["subscriptionType"] = self.subscription_type
        body["singleOptIn"] = self.single_opt_in
        return body

    @property
    def writes_names(self) -> bool:
        """Whether first/last names are mapped (written as attributes after a subscribe)."""
        return "first_name" in self.field_index or "last_name" in self.field_index

    def email_of(self, row: Sequence[Any]) -> str | None:
        """The row's email as it would be sent (lower-cased for comparison), or None."""
        index = self.field_index.get("email")
        if index is None or row[index] is None:
            return None
        try:
            return normalize_email(row[index]).lower()
        except InvalidValue:
            return None

    def unsubscribe_body(self, identity: Mapping[str, str], *, email: bool = True) -> dict[str, Any]:
        """Name the subscriptions (type and channel) instead of "all": we only undo what we did.

        ``email=False`` leaves the EMAIL channel alone: the address is still in the model (another row has it).
        """
        subscriptions = [{"type": self.subscription_type, "channel": "TEXT"}]
        if email and identity.get("email"):
            subscriptions.append({"type": self.subscription_type, "channel": "EMAIL"})
        return {
            "user": {k: identity[k] for k in ("phone", "email") if identity.get(k)},
            "subscriptions": subscriptions,
            "notification": {"disabled": not self.notify_on_unsubscribe},
        }
