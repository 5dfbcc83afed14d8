"""Emulated API keys: the scopes a key grants, the company it belongs to, and how keys are masked."""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["ALL_SCOPES", "KeySpec", "key_fingerprint", "mask_api_key"]

ALL_SCOPES: tuple[str, ...] = (
    "attributes:write",
    "events:write",
    "subscriptions:write",
    "subscriptions:read",
    "identity:write",
    "segments:read",
    "segments:write",
)


def mask_api_key(key: str) -> str:
    """Mask an API key for logs and responses: everything but the last 4 characters is hidden."""
    if len(key) <= 4:
        # Showing "the last 4" of a 4-char key would show all of it.
        return "****"
    return "*" * min(len(key) - 4, 12) + key[-4:]


def key_fingerprint(key: str) -> str:
    """A stable digest that tells keys apart (who owns a bulk job) without keeping the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class KeySpec:
    """What an emulated API key may do and which company it belongs to.

    ``scopes`` accepts any collection of scope strings and is stored as a frozenset. ``v2_access``
    False stands for a key that Attentive has not let into its v2 beta endpoints: every /v2 path
    answers it 404.
    """

    scopes: Collection[str] = ALL_SCOPES
    company_name: str = "Emulated Co"
    application_name: str = "Attentive Emulator"
    v2_access: bool = True

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
            "v2_access": self.v2_access,
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
