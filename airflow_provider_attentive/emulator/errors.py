"""The error an emulated route answers with: an HTTP status and a readable message."""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """A request the emulator rejects; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
