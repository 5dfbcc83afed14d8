"""Phone numbers for test rows: valid, distinct and predictable from an index."""

from __future__ import annotations

__all__ = ("phone",)


def phone(i: int) -> str:
    """A valid, distinct US number per index (libphonenumber accepts 415-2xx-xxxx) in E.164."""
    return f"+1415{2000000 + i:07d}"
