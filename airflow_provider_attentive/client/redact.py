"""Keeps phone numbers, email addresses and download signatures out of httpx's request log.

httpx logs every request URL at INFO ("HTTP Request: GET .../v1/subscriptions?phone=%2B1415..."), and
Airflow's task logs keep INFO: without these filters, each eligibility check would write a phone number in
clear, and each download of bulk-job results would write the signature of its pre-signed link, which lets
anyone holding it read the results for as long as the link is valid.
"""

from __future__ import annotations

import logging
import re
import urllib.parse

__all__ = ["RedactIdentifiers", "RedactSignedUrls", "install_httpx_filter", "url_without_query"]


class RedactIdentifiers(logging.Filter):
    """Masks ``phone=`` and ``email=`` query values in log lines."""

    _QUERY = re.compile(r"((?:phone|email)=)[^&\s\"']+", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "phone=" in message or "email=" in message:
            record.msg = self._QUERY.sub(r"\1***", message)
            record.args = None
        return True


# Query parameters that carry (or are part of) a URL signature: AWS S3 / CloudFront, Google Cloud Storage,
# Azure SAS, and generic "token" / "signature" names. A query holding any of them is dropped as a whole,
# since the other parameters (expiry, key id) are what an attacker would need next to the signature.
_SIGNING_PARAM = re.compile(
    r"^(?:x-amz-.*|x-goog-.*|x-ms-.*|.*signature.*|.*credential.*|.*token.*|sig|se|sp|sv|skoid|policy|"
    r"key-pair-id|expires|awsaccesskeyid|googleaccessid)$",
    re.IGNORECASE,
)
_URL_WITH_QUERY = re.compile(r"(https?://[^\s?#\"'<>]*)\?([^\s#\"'<>]*)", re.IGNORECASE)
REDACTED_QUERY = "?<redacted>"


def _is_signed(query: str) -> bool:
    for pair in query.split("&"):
        name = urllib.parse.unquote_plus(pair.partition("=")[0])
        if _SIGNING_PARAM.match(name):
            return True
    return False


def _drop_signed_queries(text: str) -> str:
    return _URL_WITH_QUERY.sub(lambda m: m.group(1) + REDACTED_QUERY if _is_signed(m.group(2)) else m.group(0), text)


class RedactSignedUrls(logging.Filter):
    """Replaces the query string of a signed URL (``X-Amz-Signature=...``, ``sig=...``) with ``?<redacted>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message and "://" in message:
            redacted = _drop_signed_queries(message)
            if redacted != message:
                record.msg = redacted
                record.args = None
        return True


def url_without_query(url: str) -> str:
    """``url`` without its query string, fragment or credentials: safe to show in a log or an error."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        # Unparseable: keep what comes before the first "?" or "#", which is all that can be trusted.
        return re.split(r"[?#]", url, maxsplit=1)[0].rpartition("@")[2]
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def install_httpx_filter() -> None:
    """Add :class:`RedactIdentifiers` and :class:`RedactSignedUrls` to the ``httpx`` logger, once per process."""
    logger = logging.getLogger("httpx")
    for kind in (RedactIdentifiers, RedactSignedUrls):
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
