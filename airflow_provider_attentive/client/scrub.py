"""Keeps secrets out of the texts the client builds: error messages, answers it hands back, URLs it names.

An error answer can echo the request's headers, and a proxy or Redis URL can carry a password. Every text
made from them goes through :func:`scrub` *before* it is cut to length: a cut can split a secret, and the
prefix left behind no longer matches the whole value being replaced.
"""

from __future__ import annotations

import functools
import json
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

__all__ = ["REDACTED", "redact_url", "scrub", "scrub_body", "secret_forms", "url_secrets"]

REDACTED = "***"

# An Authorization (or Proxy-Authorization) value whatever the key: as a header line ("Authorization: Basic
# abc"), in JSON or a Python repr ('"authorization": "Bearer abc"') or a query ("authorization=abc"). The value
# ends at a quote, a backslash (an escaped quote or line break, when the headers were dumped into a JSON string)
# or the end of the line; an Authorization named in prose without ":" or "=" is left alone.
_AUTHORIZATION = re.compile(r"""(?i)(authorization\\?["']?[ \t]*[:=][ \t]*\\?["']?)[^"'\\\r\n]+""")
# A mapping key whose value is an Authorization header (echoed headers as a JSON object).
_AUTH_NAME = re.compile(r"(?i)authorization")
# Any bearer token, wherever it appears.
_BEARER = re.compile(r"""(?i)(\bbearer[ \t]+)[^\s"',;\\]+""")
# A text without either word has no Authorization value or bearer token to scrub.
_AUTH_WORDS = re.compile(r"(?i)authorization|bearer")
# Query parameters whose value is a credential (redis-py reads password= and username= from the query).
_CREDENTIAL_NAME = re.compile(r"(?i)pass|user|secret|token|auth|cred|key")
# Of those, the ones worth masking wherever they appear; a username is not secret (and a common one such as
# "default" would be masked in every log line that says "default").
_SECRET_NAME = re.compile(r"(?i)pass|secret|token|auth|cred|key")


def secret_forms(secret: str) -> list[str]:
    """``secret`` as it may appear in a text: as is, JSON-escaped and percent-encoded, longest first."""
    return list(_forms(secret))


@functools.lru_cache(maxsize=64)
def _forms(secret: str) -> tuple[str, ...]:
    if not secret:
        return ()
    forms = {secret, json.dumps(secret)[1:-1], urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    return tuple(sorted(forms, key=len, reverse=True))


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with each of ``secrets`` (in any :func:`secret_forms`), Authorization values and bearer tokens
    replaced by ``***``."""
    for secret in secrets:
        for form in _forms(secret):
            if form in text:
                text = text.replace(form, REDACTED)
    if _AUTH_WORDS.search(text):
        text = _AUTHORIZATION.sub(rf"\g<1>{REDACTED}", text)
        text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
    return text


def scrub_body(body: Any, secrets: Iterable[str] = (), *, raw: str | None = None) -> Any:
    """A parsed answer with :func:`scrub` applied to every string in it (keys included), and the whole value of
    any key named like ``authorization`` replaced; other values as they are.

    ``raw`` is the answer's text before parsing: when it holds no secret, no Authorization or bearer and no
    backslash escape, there is nothing to scrub and ``body`` is returned without walking it (a large page of
    results costs one scan of its text).
    """
    secrets = tuple(secrets)
    if raw is not None and not _may_hold_secrets(raw, secrets):
        return body
    return _walk(body, secrets)


def _may_hold_secrets(raw: str, secrets: tuple[str, ...]) -> bool:
    # Any backslash counts: a JSON escape (\u0041, \/) can spell a secret or one of the words in the parsed
    # strings without showing it in the raw text. Plain substring tests: a regex over a large page is slower.
    if "\\" in raw:
        return True
    lowered = raw.lower()
    if "authorization" in lowered or "bearer" in lowered:
        return True
    return any(form in raw for secret in secrets for form in _forms(secret))


def _walk(body: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(body, str):
        return scrub(body, secrets)
    if isinstance(body, dict):
        return dict(_scrub_item(k, v, secrets) for k, v in body.items())
    if isinstance(body, list):
        return [_walk(v, secrets) for v in body]
    return body


def _scrub_item(name: Any, value: Any, secrets: tuple[str, ...]) -> tuple[Any, Any]:
    if not isinstance(name, str):
        return name, _walk(value, secrets)
    if isinstance(value, str) and _AUTH_NAME.search(name):
        return scrub(name, secrets), REDACTED
    return scrub(name, secrets), _walk(value, secrets)


def _split(url: str) -> urllib.parse.SplitResult | None:
    try:
        return urllib.parse.urlsplit(url)
    except ValueError:  # an unbalanced "[" in the host
        return None


def _query_items(query: str) -> list[tuple[str, str, str]]:
    """``(raw name, "=" or "", raw value)`` of each ``&``-separated part, as ``parse_qs`` splits them."""
    return [part.partition("=") for part in query.split("&")] if query else []


def redact_url(url: str) -> str:
    """``url`` with its credentials replaced by ``***``: the password (or a lone user name) before ``@``, and the
    value of every query parameter named like a credential (``password=``, ``username=``, ``ssl_password=``...).

    A URL that does not parse is shown as ``<unparseable URL>``, since nothing in it can be told apart.
    """
    parts = _split(url)
    if parts is None:
        return "<unparseable URL>"
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if colon else f"{REDACTED}@{hostport}"
    query = "&".join(
        f"{name}={REDACTED}"
        if value and _CREDENTIAL_NAME.search(urllib.parse.unquote_plus(name))
        else name + eq + value
        for name, eq, value in _query_items(parts.query)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of ``url``, as written and decoded: its password and the values of query parameters such
    as ``password=``; what to register with a log masker and to :func:`scrub` from messages."""
    parts = _split(url) if url else None
    if parts is None:
        return []
    found: list[str] = []
    userinfo, at, _ = parts.netloc.rpartition("@")
    _, colon, password = userinfo.partition(":")
    raw = password if colon else ""
    if at and raw:
        found += [raw, urllib.parse.unquote(raw)]
    for name, _, value in _query_items(parts.query):
        if value and _SECRET_NAME.search(urllib.parse.unquote_plus(name)):
            found += [value, urllib.parse.unquote_plus(value)]
    return list(dict.fromkeys(found))
