"""Secrets for the tests that check none leaks: distinctive values, and the pieces of one found in a text.

A leak is often partial (a message cut in the middle of the key), so the check looks for every 4-character
piece of the secret, not only the whole value.
"""

from __future__ import annotations

import random
import string
from typing import Any

__all__ = ("leaked", "new_secret")


def new_secret() -> str:
    """64 characters alternating an upper-case letter and a digit: no piece of one reads like a word, a number
    (a float in a repr) or a hex digest, so any piece found in a text came from the secret."""
    rng = random.SystemRandom()
    return "".join(rng.choice(string.ascii_uppercase) + rng.choice(string.digits) for _ in range(32))


def leaked(secret: str, *texts: Any) -> set[str]:
    """The 4-character pieces of ``secret`` found in any of ``texts`` (each shown with ``repr`` if not a str)."""
    joined = "\n".join(t if isinstance(t, str) else repr(t) for t in texts)
    return {secret[i : i + 4] for i in range(len(secret) - 3) if secret[i : i + 4] in joined}
