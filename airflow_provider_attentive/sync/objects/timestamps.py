"""Event timestamps: what the warehouse may hold (datetimes, ISO 8601, epoch numbers) and what Attentive takes."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from typing import Any

from airflow_provider_attentive.sync.values import InvalidValue

__all__ = ["parse_timestamp", "rfc3339"]


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
