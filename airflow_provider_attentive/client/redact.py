"""Keeps phone numbers and email addresses out of httpx's request log.

httpx logs every request URL at INFO ("HTTP Request: GET .../v1/subscriptions?phone=%2B1415..."), and
Airflow's task logs keep INFO: without this filter, each eligibility check would write a phone number in clear.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactIdentifiers", "install_httpx_filter"]


class RedactIdentifiers(logging.Filter):
    """Masks ``phone=`` and ``email=`` query values in log lines."""

    _QUERY = re.compile(r"((?:phone|email)=)[^&\s\"']+", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "phone=" in message or "email=" in message:
            record.msg = self._QUERY.sub(r"\1***", message)
            record.args = None
        return True


def install_httpx_filter() -> None:
    """Add :class:`RedactIdentifiers` to the ``httpx`` logger, once per process."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, RedactIdentifiers) for f in logger.filters):
        logger.addFilter(RedactIdentifiers())
