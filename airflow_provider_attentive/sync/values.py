"""Value rules shared by every object type: phones, emails, JSON-safe values, masking, sensitive data.

Everything here is pure and deterministic so that a row's hash (and so change detection) depends only on
the row and the sync's configuration.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

import phonenumbers


class InvalidValue(ValueError):
    """A single value cannot be sent; the message says why and never contains the value in clear."""


_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def normalize_phone(raw: Any, default_region: str | None) -> str:
    """Return ``raw`` as an E.164 phone number, or raise :class:`InvalidValue`.

    National formats are accepted only when ``default_region`` is given (e.g. ``"US"``); with no region the
    number must carry its ``+`` country code, because guessing a country could text the wrong person.
    """
    if isinstance(raw, bool) or raw is None:
        raise InvalidValue("phone is missing")
    if isinstance(raw, float):
        if not math.isfinite(raw) or raw != int(raw):
            raise InvalidValue("phone is not a phone number")
        raw = int(raw)
    text = str(raw).strip()
    if not text:
        raise InvalidValue("phone is empty")
    if len(text) > 40:
        raise InvalidValue("phone is too long to be a phone number")
    if not text.startswith("+") and default_region is None:
        if text.startswith("00"):
            text = "+" + text[2:]
        else:
            raise InvalidValue("phone has no +country code and no default_region is set")
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidValue(f"phone could not be parsed ({_parse_reason(exc)})") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidValue("phone is not a valid number for its country")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not _E164.match(e164):  # pragma: no cover - phonenumbers always formats E.164 for valid numbers
        raise InvalidValue("phone is not E.164")
    return e164


def _parse_reason(exc: phonenumbers.NumberParseException) -> str:
    reasons = {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "not a number",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }
    return reasons.get(exc.error_type, "unrecognised format")


def normalize_email(raw: Any) -> str:
    """Trim an email address and check its shape; raise :class:`InvalidValue` when it is not one."""
    if raw is None:
        raise InvalidValue("email is missing")
    if not isinstance(raw, str):
        raise InvalidValue("email is not text")
    text = raw.strip()
    if not text:
        raise InvalidValue("email is empty")
    if len(text) > 254 or not _EMAIL.match(text):
        raise InvalidValue("email is not a valid address")
    return text


def normalize_identifier(raw: Any, name: str) -> str:
    """An external identifier (e.g. clientUserId): text, trimmed, at most 100 characters (Identity API cap)."""
    if isinstance(raw, (bool, bytes, bytearray, list, dict, tuple, set)):
        raise InvalidValue(f"{name} must be text or a number")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise InvalidValue(f"{name} is not a finite number")
    text = str(raw).strip()
    if not text:
        raise InvalidValue(f"{name} is empty")
    if len(text) > 100:
        raise InvalidValue(f"{name} is longer than 100 characters")
    return text


def scalar(value: Any, name: str) -> str | int | float | bool:
    """Convert a warehouse value into a JSON scalar for a custom attribute.

    Dates become ISO 8601 text, Decimals numbers; lists, objects, bytes and non-finite numbers are refused
    because Attentive answers 400 to arrays and maps and JSON has no NaN.
    """
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return _integer(value, name)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"attribute {name!r} is {value}, which JSON cannot carry")
        return value
    if isinstance(value, decimal.Decimal):
        return _decimal(value, name)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise InvalidValue(f"attribute {name!r} is binary data; Attentive attributes are text, numbers or booleans")
    if isinstance(value, list | tuple | set | dict):
        raise InvalidValue(f"attribute {name!r} is a list or object; Attentive rejects arrays and maps")
    raise InvalidValue(f"attribute {name!r} has unsupported type {type(value).__name__}")


# Beyond a double's range a number means nothing to Attentive, and past ~4,300 digits Python cannot even write
# it as text: refused as invalid rather than failing (and being retried) at every run.
_MAX_EXPONENT = 308


def _integer(value: int, name: str) -> int:
    if value.bit_length() > 1023:
        raise InvalidValue(f"{name!r} is a number too large to send (more than {_MAX_EXPONENT} digits)")
    return value


def _decimal(value: decimal.Decimal, name: str) -> int | float:
    if not value.is_finite():
        raise InvalidValue(f"{name!r} is {value}, which JSON cannot carry")
    if value and value.adjusted() > _MAX_EXPONENT:
        raise InvalidValue(f"{name!r} is a number too large to send (more than {_MAX_EXPONENT} digits)")
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def json_value(value: Any, name: str, depth: int = 0) -> Any:
    """Convert a value (possibly nested) into plain JSON for an event property."""
    if depth > 32:
        raise InvalidValue(f"property {name!r} is nested too deeply")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return _integer(value, name)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"property {name!r} contains {value}, which JSON cannot carry")
        return value
    if isinstance(value, decimal.Decimal):
        return _decimal(value, name)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_value(v, name, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v, name, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        raise InvalidValue(f"property {name!r} is binary data")
    raise InvalidValue(f"property {name!r} has unsupported type {type(value).__name__}")


def canonical(value: Any) -> Any:
    """A JSON-encodable stand-in for any warehouse value, used only for hashing rows."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else f"<float:{value}>"
    if isinstance(value, decimal.Decimal):
        return f"<dec:{value.normalize()}>" if value.is_finite() else f"<dec:{value}>"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return f"<{type(value).__name__}:{value.isoformat()}>"
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<bytes:{bytes(value).hex()}>"
    return f"<{type(value).__name__}:{value!r}>"


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON, refusing NaN so that what we hash is what we could send."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def mask_phone(phone: str) -> str:
    """``+14155550123`` -> ``+1******0123``: enough to recognise a row in a log, not to text anyone."""
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:2] + "*" * (len(phone) - 6) + phone[-4:]


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return (local[:1] + "***@" + domain) if domain else "***"


_PHONE_LIKE = re.compile(r"^\+?[\d\s().-]{7,}$")
_PHONE_IN_TEXT = re.compile(r"\+\d{7,15}\b")
_EMAIL_IN_TEXT = re.compile(r"[^\s@'\"<>(),;:]+@[^\s@'\"<>(),;:]+\.[A-Za-z]{2,}")


def mask_text(text: str) -> str:
    """Mask the E.164 phones and email addresses inside a message (Attentive's own 4xx texts may quote them)."""
    if "+" in text:
        text = _PHONE_IN_TEXT.sub(lambda m: mask_phone(m.group()), text)
    if "@" in text:
        text = _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group()), text)
    return text


def mask_key(key: str) -> str:
    """Mask a primary key for logs when it is itself a phone number or an email address."""
    if "@" in key:
        return mask_email(key)
    if _PHONE_LIKE.match(key) and sum(c.isdigit() for c in key) >= 7:
        return mask_phone(key)
    return key if len(key) <= 200 else key[:197] + "..."


def printable(text: str) -> str:
    """``text`` as every database stores it: lone surrogates and NUL characters escaped (PostgreSQL refuses both)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def mask_payload(payload: Any) -> Any:
    """A copy of a request body with phones and emails masked, for dry-run samples and logs."""
    if isinstance(payload, Mapping):
        out: dict[str, Any] = {}
        for k, v in payload.items():
            if k == "phone" and isinstance(v, str):
                out[k] = mask_phone(v)
            elif k == "email" and isinstance(v, str):
                out[k] = mask_email(v)
            else:
                out[k] = mask_payload(v)
        return out
    if isinstance(payload, list):
        return [mask_payload(v) for v in payload]
    return payload


# --- sensitive data Attentive's terms prohibit ---------------------------------------------------------

_SENSITIVE_NAME = re.compile(
    r"(^|[^a-z])(ssn|social_?security|sin_number|tax_?id|tin|itin|passport|"
    r"card_?(number|num|no)|credit_?card|debit_?card|cc_?(number|num|no)|pan|cvv|cvc|iban|"
    r"bank_?account|routing_?number|diagnos\w*|medical\w*|health\w*|prescription\w*|medication\w*|"
    r"disease\w*|hiv|pregnan\w*|insurance_?(id|number))($|[^a-z])",
    re.IGNORECASE,
)
_SSN_VALUE = re.compile(r"^\d{3}-\d{2}-\d{4}$")
# A card number written as one (groups of four, or Amex's 4-6-5) is a strong sign on its own; a bare run of
# digits is not: one in ten random 13-19 digit ids passes the Luhn check, so bare digits only count when
# most of a column looks like cards (see looks_like_card_digits).
_CARD_FORMATTED = re.compile(r"^\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}$|^\d{4}([ -])\d{6}\2\d{5}$")
_CARD_DIGITS = re.compile(r"^\d{13,19}$")
_CARD_PREFIX = re.compile(r"^(4|5[1-5]|2[2-7]|3[47]|6011|65|35)")


def sensitive_name(name: str) -> bool:
    """True when a column or field name suggests SSNs, payment cards or health data."""
    return bool(_SENSITIVE_NAME.search(name.replace("-", "_").replace(" ", "_")))


def sensitive_value(value: Any) -> str | None:
    """Return "SSN" or "payment card number" when a value looks like one, else None."""
    text = _short_text(value)
    if text is None or len(text) < 11 or len(text) > 23:
        return None
    if _SSN_VALUE.match(text):
        return "SSN"
    if _CARD_FORMATTED.match(text):
        digits = re.sub(r"\D", "", text)
        if _CARD_PREFIX.match(digits) and _luhn(digits):
            return "payment card number"
    return None


def looks_like_card_digits(value: Any) -> bool:
    """A bare 13-19 digit number with a card prefix and a valid Luhn check digit (weak on its own)."""
    text = _short_text(value)
    return bool(text and _CARD_DIGITS.match(text) and _CARD_PREFIX.match(text) and _luhn(text))


def _short_text(value: Any) -> str | None:
    """A text or integer value as stripped text, or None (integers too long to print are no SSN or card)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, int) and value.bit_length() > 256:
        return None
    return str(value).strip()


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0
