"""Airflow hook for the Attentive API: reads the connection and hands out an :class:`AttentiveTransport`.

The transport it builds comes from :mod:`airflow_provider_attentive.client`, which imports no Airflow.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from airflow_provider_attentive.client import (
    DEFAULT_BASE_URL,
    ENDPOINTS,
    RATE_LIMIT_BACKENDS,
    AttentiveTransport,
    EndpointName,
    Request,
    Result,
    SqlRateLimiter,
    TransportConfig,
)
from airflow_provider_attentive.client.scrub import scrub, url_secrets
from airflow_provider_attentive.get_provider_info import UI_FIELD_BEHAVIOUR

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["AttentiveHook"]

# Connection-form extras (see get_provider_info.CONN_FIELDS) -> the endpoint each one throttles;
# rate_limit_default covers every endpoint without an extra of its own (also any endpoint added later).
_RATE_FIELDS: dict[str, EndpointName] = {
    "rate_limit_attributes": EndpointName.ATTRIBUTES,
    "rate_limit_events": EndpointName.EVENTS,
    "rate_limit_subscribe": EndpointName.SUBSCRIBE,
    "rate_limit_unsubscribe": EndpointName.UNSUBSCRIBE,
    "rate_limit_identity": EndpointName.IDENTITY,
    # Every v2 endpoint has an extra of its own, rate_limit_<name> (rate_limit_bulk, rate_limit_bulk_job, ...):
    # Attentive gives each its own 100 requests/s budget, which the default set for v1 endpoints should not move.
    **{f"rate_limit_{name.value}": name for name, endpoint in ENDPOINTS.items() if endpoint.path.startswith("/v2/")},
}
_DEFAULT_RATE_FIELD = "rate_limit_default"


def _coerce_number(conn_id: str, name: str, value: Any, *, integer: bool, minimum: float) -> float | int | None:
    """Turn an extra into a number. URI-form connections deliver every extra as a string."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    problem = f"must be {'a whole number' if integer else 'a number'} >= {minimum:g}"
    if isinstance(value, bool):
        raise ValueError(f"Attentive connection {conn_id!r}: extra {name!r} {problem}, got {value!r}")
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Attentive connection {conn_id!r}: extra {name!r} {problem}, got {value!r}") from None
    if not math.isfinite(number) or number < minimum or (integer and not number.is_integer()):
        raise ValueError(f"Attentive connection {conn_id!r}: extra {name!r} {problem}, got {value!r}")
    if not integer and number == 0:
        raise ValueError(f"Attentive connection {conn_id!r}: extra {name!r} must be greater than 0")
    return int(number) if integer else number


def _coerce_bool(conn_id: str, name: str, value: Any) -> bool | None:
    """Turn an extra into a bool; URI-form connections deliver ``"true"``/``"false"`` strings."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
    elif isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"Attentive connection {conn_id!r}: extra {name!r} must be true or false, got {value!r}")


def _coerce_text(conn_id: str, name: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError(f"Attentive connection {conn_id!r}: extra {name!r} must be a string, got {value!r}")
    return value.strip()


def rate_limit_sql_conn_id(conn_id: str, extra: Mapping[str, Any]) -> str | None:
    """The ``rate_limit_sql_conn_id`` extra: the SQL connection holding the shared budget (backend "sql")."""
    return _coerce_text(conn_id, "rate_limit_sql_conn_id", extra.get("rate_limit_sql_conn_id"))


# Besides its own type, a connection without a type (a URI or JSON that names none) and Airflow's generic HTTP
# types (a plain "https://:<key>@api.attentivemobile.com" URI, or an HTTP connection made in the UI before this
# provider was installed) carry everything the hook reads: host, port, password and extras.
_ACCEPTED_CONN_TYPES = frozenset({"attentive", "http", "https"})


def check_conn_type(conn_id: str, conn_type: str | None) -> None:
    """Refuse a connection of another kind (say the warehouse) before its missing API key hides the mix-up."""
    kind = (conn_type or "").strip().lower().replace("-", "_")
    if kind and kind not in _ACCEPTED_CONN_TYPES:
        raise ValueError(
            f"connection {conn_id!r} is of type {conn_type!r}, not 'attentive': attentive_conn_id must name an "
            "Attentive connection"
        )


def config_from_connection(
    conn_id: str,
    host: str | None,
    port: int | None,
    password: str | None,
    extra: Mapping[str, Any],
) -> TransportConfig:
    """Build a :class:`TransportConfig` from connection fields; errors name the offending field."""
    if not password or not password.strip():
        raise ValueError(
            f"Attentive connection {conn_id!r} has no API key: put the private-app API key in the "
            "connection's API key (password) field"
        )
    base_url = (host or "").strip() or DEFAULT_BASE_URL
    if port and "://" in base_url:
        scheme, rest = base_url.split("://", 1)
        netloc, sep, path = rest.partition("/")
        if ":" not in netloc.rsplit("]", 1)[-1]:
            base_url = f"{scheme}://{netloc}:{port}{sep}{path}"
    elif port and ":" not in base_url.rsplit("]", 1)[-1]:
        base_url = f"{base_url}:{port}"

    rates: dict[str, float] = {}
    default = _coerce_number(conn_id, _DEFAULT_RATE_FIELD, extra.get(_DEFAULT_RATE_FIELD), integer=False, minimum=0)
    if default is not None:
        rates.update(dict.fromkeys(set(EndpointName) - set(_RATE_FIELDS.values()), float(default)))
    for field_name, endpoint in _RATE_FIELDS.items():
        rate = _coerce_number(conn_id, field_name, extra.get(field_name), integer=False, minimum=0)
        if rate is not None:
            rates[endpoint] = float(rate)
    kwargs: dict[str, Any] = {}
    timeout = _coerce_number(conn_id, "timeout", extra.get("timeout"), integer=False, minimum=0)
    if timeout is not None:
        kwargs["timeout"] = float(timeout)
    for name in ("max_attempts", "max_concurrency"):
        value = _coerce_number(conn_id, name, extra.get(name), integer=True, minimum=1)
        if value is not None:
            kwargs[name] = int(value)
    backend = _coerce_text(conn_id, "rate_limit_backend", extra.get("rate_limit_backend")) or "local"
    if backend.lower() not in RATE_LIMIT_BACKENDS:
        raise ValueError(
            f"Attentive connection {conn_id!r}: extra 'rate_limit_backend' must be one of "
            f"{', '.join(RATE_LIMIT_BACKENDS)}, got {extra.get('rate_limit_backend')!r}"
        )
    kwargs["rate_limit_backend"] = backend.lower()
    kwargs["rate_limit_redis_url"] = _coerce_text(conn_id, "rate_limit_redis_url", extra.get("rate_limit_redis_url"))
    share = _coerce_number(conn_id, "rate_limit_share", extra.get("rate_limit_share"), integer=False, minimum=0)
    if share is not None:
        if share > 1:
            raise ValueError(
                f"Attentive connection {conn_id!r}: extra 'rate_limit_share' must be a fraction in (0, 1] "
                f"(1/N for N tasks sharing the key), got {extra.get('rate_limit_share')!r}"
            )
        kwargs["rate_limit_share"] = float(share)
    insecure = _coerce_bool(conn_id, "allow_insecure_http", extra.get("allow_insecure_http"))
    if insecure is not None:
        kwargs["allow_insecure_http"] = insecure
    kwargs["proxy"] = _coerce_text(conn_id, "proxy", extra.get("proxy"))
    if kwargs["rate_limit_backend"] == "sql" and rate_limit_sql_conn_id(conn_id, extra) is None:
        raise ValueError(
            f"Attentive connection {conn_id!r}: rate_limit_backend 'sql' needs the extra 'rate_limit_sql_conn_id' "
            "(a SQL connection every worker can reach, such as the sync state connection)"
        )
    try:
        return TransportConfig(base_url=base_url, api_key=password, rate_limits=rates, **kwargs)
    except ValueError as exc:
        raise ValueError(f"Attentive connection {conn_id!r}: {exc}") from None


class AttentiveHook(BaseHook):
    """Talks to the Attentive REST API through a connection of type ``attentive``.

    The connection's password is the private-app API key, its host the base URL (default
    ``https://api.attentivemobile.com``), and its extras the rate limits, timeout, attempts and
    concurrency declared in ``get_provider_info``. Requests are throttled per endpoint and retried as
    described in :mod:`airflow_provider_attentive.client.retry`; every method returns a
    :class:`~airflow_provider_attentive.client.models.Result` instead of raising on HTTP errors.

    Attentive's limits are per API key, so tasks in several processes that share a key should share one
    budget: extra ``rate_limit_backend`` ``"redis"`` (with ``rate_limit_redis_url``) or ``"sql"`` (with
    ``rate_limit_sql_conn_id``, a SQL connection this hook opens); see
    :mod:`airflow_provider_attentive.client.ratelimit.shared`. ``rate_limit_share`` scales the in-process
    limits (local backend) or sets the fallback share during a backend outage; ``allow_insecure_http``
    accepts ``http://`` to a non-loopback emulator.
    """

    conn_name_attr = "attentive_conn_id"
    default_conn_name = "attentive_default"
    conn_type = "attentive"
    hook_name = "Attentive"

    def __init__(self, attentive_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attentive_conn_id = attentive_conn_id
        self._config: TransportConfig | None = None
        self._sql_conn_id: str | None = None
        self._transport: AttentiveTransport | None = None
        self._sql_limiter: SqlRateLimiter | None = None
        # Set by aget_config, which looks the connection up without blocking the event loop.
        self._connection: Connection | None = None
        # Everything secret read from the connection, as stored and as used: scrubbed from Test messages.
        self._secrets: list[str] = []

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form tweaks for Airflow UIs older than 3.3 (3.3 reads get_provider_info)."""
        return {key.replace("-", "_"): value for key, value in UI_FIELD_BEHAVIOUR.items()}

    @property
    def config(self) -> TransportConfig:
        """The transport settings read from the connection (read once, then cached)."""
        if self._config is None:
            conn = self._connection or self.get_connection(self.attentive_conn_id)
            check_conn_type(self.attentive_conn_id, conn.conn_type)
            # Masked before anything can fail and quote them: the key as stored and as sent (stripped), and the
            # passwords in the Redis and proxy URLs, however they are written.
            self._mask(conn.password, (conn.password or "").strip())
            extra = conn.extra_dejson
            if not isinstance(extra, Mapping):
                raise ValueError(f"Attentive connection {self.attentive_conn_id!r}: extra must be a JSON object")
            for name in ("rate_limit_redis_url", "proxy"):
                if isinstance(extra.get(name), str):
                    self._mask(*url_secrets(extra[name].strip()))
            config = config_from_connection(self.attentive_conn_id, conn.host, conn.port, conn.password, extra)
            self._mask(*config.secret_values())
            self._sql_conn_id = rate_limit_sql_conn_id(self.attentive_conn_id, extra)
            self._config = config
        return self._config

    async def aget_config(self) -> TransportConfig:
        """:attr:`config`, with the connection looked up asynchronously: for triggers, on the triggerer's loop.

        The same checks as :attr:`config`; a ``ValueError`` names the field at fault and never the secrets.
        """
        if self._config is None and self._connection is None:
            aget_connection = getattr(self, "aget_connection", None)
            if aget_connection is not None:
                self._connection = await aget_connection(self.attentive_conn_id)
            else:  # Airflow before 3.1 has no async lookup: a thread keeps the loop free
                self._connection = await asyncio.to_thread(self.get_connection, self.attentive_conn_id)
        try:
            return self.config
        except ValueError as exc:
            raise ValueError(self._scrub(str(exc))) from None

    def get_conn(self) -> AttentiveTransport:
        """Return the (cached) transport for this connection.

        Raises ``ValueError`` when the connection is misconfigured and
        :class:`~airflow_provider_attentive.client.ratelimit.shared.RateLimitBackendUnavailable` when the shared
        rate-limit backend (Redis or the SQL connection) cannot be reached.
        """
        if self._transport is None:
            config = self.config
            limiter = self._make_sql_limiter(config) if config.rate_limit_backend == "sql" else None
            try:
                self._transport = AttentiveTransport(config, limiter=limiter)
            except BaseException:
                if limiter is not None:
                    limiter.close()
                raise
            self._sql_limiter = limiter
        return self._transport

    def _make_sql_limiter(self, config: TransportConfig) -> SqlRateLimiter:
        from airflow.providers.common.sql.hooks.sql import DbApiHook

        conn_id = self._sql_conn_id
        assert conn_id is not None  # config_from_connection requires it for the "sql" backend
        try:
            db_hook = BaseHook.get_connection(conn_id).get_hook()
        except Exception as exc:
            raise ValueError(
                f"Attentive connection {self.attentive_conn_id!r}: rate_limit_sql_conn_id {conn_id!r} "
                f"cannot be used: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(db_hook, DbApiHook):
            raise ValueError(
                f"Attentive connection {self.attentive_conn_id!r}: rate_limit_sql_conn_id {conn_id!r} has hook "
                f"{type(db_hook).__name__}, which is not a SQL (DbApiHook) connection"
            )
        return SqlRateLimiter(
            db_hook.get_conn,
            base_url=config.base_url,
            api_key=config.api_key,
            rates=config.rates(),
            share=config.rate_limit_share,
            placeholder=db_hook.placeholder,
            description=f"connection {conn_id!r}",
        )

    def close(self) -> None:
        """Close the transport (and the SQL rate limiter), if they were created."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._sql_limiter is not None:
            self._sql_limiter.close()
            self._sql_limiter = None

    def test_connection(self) -> tuple[bool, str]:
        """Call ``GET /v1/me`` and report whether the key works, without ever echoing the key."""
        created = self._transport is None
        try:
            transport = self.get_conn()
        except Exception as exc:
            return False, self._scrub(str(exc))
        try:
            result = transport.request(EndpointName.ME, max_attempts=2)
        except Exception as exc:
            return False, self._scrub(f"{type(exc).__name__}: {exc}")
        finally:
            if created:
                self.close()
        if result.ok:
            body = result.body if isinstance(result.body, Mapping) else {}
            company = body.get("companyName") or "an unnamed company"
            application = body.get("applicationName") or "unnamed"
            return True, f"Connected to {company} (application {application})"
        if result.status == 401:
            message = (
                "Attentive rejected the API key (401 Unauthorized): check the key in the connection, "
                "or create a new one in Attentive's custom app settings"
            )
        elif result.status == 403:
            message = (
                "Attentive refused access (403 Forbidden): the key is known but may not call /v1/me; "
                "check the custom app's permissions"
            )
        elif result.status is None:
            message = f"Could not reach Attentive at {self.config.base_url}: {result.error}"
        else:
            message = result.error or f"Attentive answered HTTP {result.status}"
        return False, self._scrub(message)

    def _mask(self, *values: str | None) -> None:
        """Register ``values`` with Airflow's secrets masker (task logs) and this hook's :meth:`_scrub`."""
        for value in values:
            if value and value not in self._secrets:
                mask_secret(value)
                self._secrets.append(value)

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    # -- one method per endpoint --------------------------------------------------------------------

    def get_me(self) -> Result:
        """``GET /v1/me``: the company and application the key belongs to."""
        return self.get_conn().request(EndpointName.ME)

    def post_custom_attributes(self, body: Mapping[str, Any]) -> Result:
        """``POST /v1/attributes/custom``: set custom attributes on one user."""
        return self.get_conn().request(EndpointName.ATTRIBUTES, body)

    def post_custom_event(self, body: Mapping[str, Any]) -> Result:
        """``POST /v1/events/custom``: record one custom event (give it a stable ``externalEventId``)."""
        return self.get_conn().request(EndpointName.EVENTS, body)

    def subscribe(self, body: Mapping[str, Any]) -> Result:
        """``POST /v1/subscriptions``: may text the person; never retried once it may have arrived."""
        return self.get_conn().request(EndpointName.SUBSCRIBE, body)

    def unsubscribe(self, body: Mapping[str, Any]) -> Result:
        """``POST /v1/subscriptions/unsubscribe``: may text the person; not resent if it may have arrived."""
        return self.get_conn().request(EndpointName.UNSUBSCRIBE, body)

    def get_subscriptions(self, phone: str | None = None, email: str | None = None) -> Result:
        """``GET /v1/subscriptions``: subscription eligibility for exactly one of ``phone`` or ``email``."""
        if (phone is None) == (email is None):
            raise ValueError("get_subscriptions needs exactly one of phone or email")
        params = {"phone": phone} if phone is not None else {"email": str(email)}
        return self.get_conn().request(EndpointName.SUBSCRIPTIONS_READ, params=params)

    def identify(self, body: Mapping[str, Any]) -> Result:
        """``POST /v1/identity-resolution/user-identifiers``: link identifiers to one user."""
        return self.get_conn().request(EndpointName.IDENTITY, body)

    def send_many(
        self, endpoint_name: EndpointName | str, requests: Iterable[Request], *, window: int | None = None
    ) -> Iterator[Result]:
        """Send many requests concurrently; see :meth:`AttentiveTransport.send_many`."""
        return self.get_conn().send_many(endpoint_name, requests, window=window)
