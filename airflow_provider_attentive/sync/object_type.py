"""The object-type interface: what the engine asks of attributes, events, subscriptions (and any new type).

An object type turns a row into:

* a state key and a *row hash* (cheap: no phone parsing), which the engine compares with the state table
  to find unchanged rows without any validation work; the hash covers the mapped values and the sync's
  configuration, so changing the mapping or the region re-sends everything once;
* on demand, a validated, normalised request body (:meth:`ObjectType.prepare`), or the reason it is invalid.

It also decides, through the hooks of :class:`ObjectType`, everything else that differs between types: which
state rows count as done (:meth:`~ObjectType.classify`), where each operation is sent, what an accepted answer
means (:meth:`~ObjectType.read_ok`), and the phases it runs before and after the model is streamed (in-doubt
resolution, mirror removals, follow-ups). The engine drives every type through these hooks alone; a type uses
the run through the :class:`Run` protocol, which the engine implements.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from airflow_provider_attentive.sync.errors import RunStopped, SyncConfigError
from airflow_provider_attentive.sync.values import (
    InvalidValue,
    canonical,
    dumps,
    looks_like_card_digits,
    normalize_email,
    normalize_identifier,
    normalize_phone,
    sensitive_name,
    sensitive_value,
)

if TYPE_CHECKING:
    import logging

    from airflow_provider_attentive.client import Result
    from airflow_provider_attentive.sync.options import SyncOptions
    from airflow_provider_attentive.sync.source import SqlSource
    from airflow_provider_attentive.sync.state import RowOutcome, StateRow, StateStore
    from airflow_provider_attentive.sync.summary import Summary

__all__ = [
    "IDENTIFIER_FIELDS",
    "Answer",
    "Batch",
    "Invalid",
    "ObjectType",
    "Planned",
    "Prepared",
    "Run",
    "key_text",
]

IDENTIFIER_FIELDS = ("phone", "email", "client_user_id")


@dataclass
class Prepared:
    """A row ready to send."""

    payload: dict[str, Any]
    identity: dict[str, Any] = field(default_factory=dict)
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


@dataclass
class Planned:
    """A row (or a removal) that needs a request: what the engine writes as an intent, then sends."""

    key: str
    op: str  # added | changed | removed
    attempt_hash: str
    prepared: Prepared | None
    body: dict[str, Any]


@dataclass
class Batch:
    """Planned requests whose intents are written together; ``existing`` are their keys already in the state."""

    items: list[Planned]
    existing: set[str]


@dataclass
class Answer:
    """What an accepted answer means for the row, as the object type reads it."""

    member: str | None = None  # new membership (audience types); None = unchanged
    message: str | None = None
    # False: accepted, but the row is not complete yet (a follow-up request is still to be sent).
    confirm: bool = True
    stop: RunStopped | None = None  # the answer shows that the run must not go on (a configuration mismatch)
    identity: dict[str, Any] | None = None  # the row's identity from now on; None: unchanged


class Run(Protocol):
    """The engine as an object type sees it during one run (implemented by ``SyncEngine``)."""

    options: SyncOptions
    summary: Summary
    state: StateStore
    source: SqlSource
    sender: Any
    log: logging.Logger

    @property
    def state_ready(self) -> bool:
        """Whether the state tables exist (a dry run on a new sync has none)."""

    @property
    def halted(self) -> bool:
        """Whether the run stopped sending (an auth error, Attentive unavailable, a configuration mismatch)."""

    @property
    def send_batch_size(self) -> int:
        """Rows per batch handed to :meth:`dispatch` that make full requests (10,000 segment members, say)."""

    def dispatch(self, endpoint: str, batches: Iterable[Batch]) -> None:
        """Send planned requests within the budget: intents first, then delivery, then each outcome recorded."""

    def sample(self, body: dict[str, Any], key: str, op: str) -> None:
        """In a dry run, keep a masked sample and the masked key of what would be sent."""

    def write_outcomes(self, outcomes: Sequence[RowOutcome]) -> None:
        """Record outcomes decided outside the send loop (pre-checks, in-doubt resolution)."""

    def flush(self, force: bool = False) -> None:
        """Write the buffered outcomes."""

    def progress(self) -> None:
        """Log progress now and then (it also keeps the run's lock alive)."""

    def stop(self, error: RunStopped) -> None:
        """No further request of this run can succeed: send no new batch, finish recording, then raise."""


# Fields whose values identify or describe the event rather than being stored as data.
_NOT_VALUES = frozenset({"phone", "email", "client_user_id", "type", "timestamp"})


def _match_column(columns: Sequence[str], wanted: str) -> str | None:
    """Exact match first, then case-insensitive: Snowflake and Oracle return upper-case column names."""
    if wanted in columns:
        return wanted
    lowered = [c for c in columns if c.lower() == wanted.lower()]
    return lowered[0] if len(lowered) == 1 else None


def shown_columns(columns: Sequence[str], limit: int = 40) -> str:
    """The model's columns for an error message; a wide model is cut short."""
    if len(columns) <= limit:
        return repr(list(columns))
    return repr(list(columns[:limit]))[:-1] + f", ... ({len(columns) - limit} more)]"


def simple_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def guess_column(columns: Sequence[str], *wanted: str) -> str:
    """The column most likely meant as ``wanted`` (e.g. 'Phone Number' for phone), for an example in a message."""
    hints = {"phone": ("phone", "mobile", "msisdn", "sms", "cell"), "email": ("mail",)}
    for field_name in wanted:
        for column in columns:
            if any(hint in simple_name(column) for hint in hints.get(field_name, (field_name,))):
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
    """Base class of every object type: column resolution, the key, the row hash, and the engine's hooks.

    A subclass sets the class attributes below, implements :meth:`default_mapping` and :meth:`prepare`, and
    overrides the run hooks (at the end of the class) where it differs from "upsert each changed row".
    """

    object_type: ClassVar[str] = ""
    #: the modes the type accepts; the first is the default
    modes: ClassVar[tuple[str, ...]] = ()
    #: the endpoint (a ``client.EndpointName``) rows are sent to
    endpoint: ClassVar[str] = ""
    #: what a row whose intent has no outcome (a run died mid-request) becomes: "failed" (resent) is right
    #: only for idempotent requests; anything else is "in_doubt"
    pending_status: ClassVar[str] = "in_doubt"
    #: several rows may share one state key (one person behind two customer rows); counted under this name.
    #: None: a repeated key is an invalid row.
    shared_key_counter: ClassVar[str | None] = None
    #: operations beyond added / changed / removed that the type plans (counted in the summary)
    extra_ops: ClassVar[tuple[str, ...]] = ()

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
        self.mode = self.modes[0] if self.modes else ""
        self._run: Run | None = None

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

    def row_hash(self, row: Sequence[Any]) -> str:
        body = dumps([self._fingerprint, [canonical(row[i]) for i in self._hash_order]])
        return hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

    def prepare(self, row: Sequence[Any], key: str) -> Prepared | Invalid:
        raise NotImplementedError

    def _no_identifier_message(self) -> str:
        columns = shown_columns(self.columns)
        if self.mapping is None:
            guess = guess_column(self.columns, "phone", "email")
            dest = "email" if "mail" in simple_name(guess) else "phone"
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

    # -- run hooks: what the engine asks of the type during a run ---------------------------------------------

    @property
    def run(self) -> Run:
        """The run this type is bound to (see :meth:`bind`)."""
        if self._run is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to a run")
        return self._run

    def bind(self, run: Run) -> None:
        """Start a run: the engine calls this once, before anything else; per-run state is reset here."""
        self._run = run
        self.mode = run.options.mode

    def summary_counters(self) -> dict[str, Any]:
        """The type's own summary counters, with their initial values (they appear in every summary)."""
        return {}

    def before_rows(self) -> None:
        """A phase before the model is streamed (after pending rows are settled)."""

    def observe(self, key: str, row: Sequence[Any]) -> None:
        """Called for every row of the model that has a usable key, before it is classified."""

    def observe_unkeyed(self, row: Sequence[Any]) -> None:
        """Called for every row of the model without a usable key (already reported as invalid)."""

    def stream_endpoint(self) -> str:
        """Where the model's rows are sent in this run's mode."""
        return self.endpoint

    def classify(
        self, key: str, row: Sequence[Any], state: StateRow | None, status: str | None, row_hash: str
    ) -> str | None:
        """The operation a row needs (``added`` or ``changed``), or None when it is unchanged.

        ``status`` is the state row's status (a dry run sees ``pending`` as :attr:`pending_status`). The engine
        then holds rows that Attentive rejected with the same data or that are in doubt.
        """
        if state is None or state.row_hash is None:
            return "added"
        if status == "ok" and state.row_hash == row_hash:
            return None
        return "changed"

    def unrecognised_state(self, state: StateRow) -> str | None:
        """Why the type does not recognise a state row (a value it never writes), or None; such rows are held."""
        return None

    def admit(self, op: str, prepared: Prepared) -> bool:
        """Whether a prepared row goes out (False drops it, counted by the type)."""
        return True

    def body(self, op: str, prepared: Prepared) -> dict[str, Any]:
        """The request body for ``op``."""
        return prepared.payload

    def before_send(self, items: list[Planned]) -> list[Planned]:
        """Called with each batch once its intents are written; returns what still needs sending."""
        return items

    def read_ok(self, item: Planned, result: Result) -> Answer:
        """What an accepted answer means for the row."""
        return Answer()

    def after_rows(self) -> None:
        """A phase after the model is streamed (mirror removals, follow-ups); the engine then finishes."""
