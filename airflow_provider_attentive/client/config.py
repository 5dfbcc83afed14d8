"""Everything a transport needs to know: :class:`TransportConfig`, the base URL and its https-or-loopback rule.

Light on purpose (no httpx): Airflow's provider manager imports ``get_provider_info``, which reads
``DEFAULT_BASE_URL`` from here.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from airflow_provider_attentive import __version__
from airflow_provider_attentive.client.endpoints import ENDPOINTS, EndpointName, endpoint_names, get_endpoint
from airflow_provider_attentive.client.ratelimit.backends import RATE_LIMIT_BACKENDS
from airflow_provider_attentive.client.scrub import redact_url, url_secrets

__all__ = [
    "DEFAULT_BASE_URL",
    "TransportConfig",
    "check_plain_http",
    "is_loopback_host",
    "normalize_base_url",
    "normalize_proxy_url",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.attentivemobile.com"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: the only hosts plain ``http://`` may reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plain_http(scheme: str, host: str, *, allow_insecure_http: bool, refusal: str, warning: str) -> None:
    """The rule for every URL the client talks to: plain ``http://`` only to a loopback host (an emulator).

    Anything else over ``http://`` raises ``ValueError(refusal)``, unless ``allow_insecure_http`` (an emulator
    inside a private network), which logs ``warning`` instead.
    """
    if scheme != "http" or is_loopback_host(host):
        return
    if not allow_insecure_http:
        raise ValueError(refusal)
    log.warning("%s", warning)


def normalize_base_url(value: str, *, allow_insecure_http: bool = False) -> str:
    """Turn what a user typed into ``scheme://host[:port][/prefix]`` without a trailing ``/v1``.

    A bare host gets ``https://``. Plain ``http://`` is refused except for loopback hosts (a local
    emulator), because the API key is sent in every request's headers; ``allow_insecure_http`` accepts
    it for any host (an emulator inside a private docker network; never the real API) with a warning.
    """
    raw = (value or "").strip()
    if not raw:
        raise ValueError("the Attentive base URL is empty")
    if "://" not in raw:
        raw = "https://" + raw
    parts = urllib.parse.urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"the Attentive base URL must use https:// (got {scheme}://)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the Attentive base URL must not contain credentials; put the API key in the password")
    if parts.query or parts.fragment:
        raise ValueError("the Attentive base URL must not contain a query string or fragment")
    host = parts.hostname
    if not host:
        raise ValueError(f"the Attentive base URL {value!r} has no host")
    try:
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError as exc:
        raise ValueError(f"the Attentive base URL {value!r} has an invalid port") from exc
    check_plain_http(
        scheme,
        host,
        allow_insecure_http=allow_insecure_http,
        refusal=(
            f"refusing plain http:// for {host}: the API key would travel unencrypted. Use https://; "
            "plain http is only accepted for loopback hosts (127.0.0.1, ::1, localhost), "
            "such as a local emulator, or with the connection extra allow_insecure_http for an emulator "
            "inside a private network"
        ),
        warning=(
            f"allow_insecure_http: sending the Attentive API key over plain http:// to {host}; only acceptable "
            "for an emulator inside a private network, never for the real API"
        ),
    )
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{scheme}://{parts.netloc}{path}"


def normalize_proxy_url(value: str | None, *, allow_insecure_http: bool = False) -> str | None:
    """Check the ``proxy`` connection extra: ``http(s)://[user:password@]host[:port]``, or ``None`` for none.

    The same rule as the base URL: a plain ``http://`` proxy is accepted on loopback only, or with
    ``allow_insecure_http``, because what travels to it in clear (the proxy's own credentials, and the
    API key when the base URL is plain http too) can be read on the way. Errors show the URL redacted.
    """
    raw = (value or "").strip()
    if not raw:
        return None
    scheme = raw.partition("://")[0].lower() if "://" in raw else ""
    if scheme not in ("http", "https"):
        # Not shown: without a scheme, redaction cannot tell a password from a host.
        raise ValueError("the proxy URL must start with http:// or https://")
    shown = redact_url(raw)
    try:
        parts = urllib.parse.urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError:
        raise ValueError(f"the proxy URL {shown!r} does not parse (bad host or port)") from None
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"the proxy URL {shown!r} must be scheme://host:port, without a path or query string")
    host = parts.hostname
    if not host:
        raise ValueError(f"the proxy URL {shown!r} has no host")
    if scheme == "http" and not is_loopback_host(host):
        if not allow_insecure_http:
            raise ValueError(
                f"refusing the plain http:// proxy {shown}: what is sent to it travels unencrypted. Use an "
                "https:// proxy; plain http is only accepted for a proxy on a loopback host, or with the "
                "connection extra allow_insecure_http"
            )
        log.warning("allow_insecure_http: using the plain http:// proxy %s", shown)
    return raw


@dataclass(frozen=True)
class TransportConfig:
    """Everything an :class:`AttentiveTransport` needs. ``api_key`` is left out of ``repr``.

    ``rate_limits`` overrides Attentive's published limit per endpoint name (an
    :class:`~airflow_provider_attentive.client.endpoints.EndpointName` or its value; see ``ENDPOINTS``), in
    requests per second; fractional values are allowed.

    ``rate_limit_backend`` says where the budget lives: ``"local"`` (this process only, the default),
    ``"redis"`` (shared through ``rate_limit_redis_url``) or ``"sql"`` (shared through a SQL table; the
    caller passes the limiter, see :class:`~airflow_provider_attentive.client.ratelimit.sql.SqlRateLimiter`).
    ``rate_limit_share`` (0-1] is the fraction of each limit one process uses on its own: always with
    ``"local"`` (1/N when N tasks share a key through an Airflow pool of N slots), and with a shared
    backend only while that backend is unreachable (default there: 1 / the limiters seen on the key).
    ``allow_insecure_http`` accepts ``http://`` to a non-loopback host (see :func:`normalize_base_url`).
    ``proxy`` is the only proxy used (see :func:`normalize_proxy_url`): ``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY`` and ``.netrc`` are ignored, so the environment cannot route the key somewhere else.
    """

    base_url: str
    api_key: str = field(repr=False)
    rate_limits: Mapping[str, float] = field(default_factory=dict)
    timeout: float = 30.0
    max_attempts: int = 6
    max_concurrency: int = 64
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_throttle_s: float = 600.0
    user_agent: str = f"airflow-provider-attentive/{__version__}"
    rate_limit_backend: str = "local"
    rate_limit_redis_url: str | None = field(default=None, repr=False)
    rate_limit_share: float | None = None
    allow_insecure_http: bool = False
    proxy: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "base_url", normalize_base_url(self.base_url, allow_insecure_http=bool(self.allow_insecure_http))
        )
        object.__setattr__(
            self, "proxy", normalize_proxy_url(self.proxy, allow_insecure_http=bool(self.allow_insecure_http))
        )
        backend = (self.rate_limit_backend or "local").strip().lower()
        if backend not in RATE_LIMIT_BACKENDS:
            raise ValueError(
                f"rate_limit_backend must be one of {', '.join(RATE_LIMIT_BACKENDS)}, got {self.rate_limit_backend!r}"
            )
        object.__setattr__(self, "rate_limit_backend", backend)
        url = (self.rate_limit_redis_url or "").strip() or None
        if backend == "redis" and url is None:
            raise ValueError("rate_limit_backend 'redis' needs rate_limit_redis_url (e.g. redis://redis:6379/2)")
        object.__setattr__(self, "rate_limit_redis_url", url)
        if self.rate_limit_share is not None:
            share = float(self.rate_limit_share)
            if not 0 < share <= 1:
                raise ValueError(f"rate_limit_share must be a fraction in (0, 1], got {self.rate_limit_share!r}")
            object.__setattr__(self, "rate_limit_share", share)
        key = self.api_key.strip() if isinstance(self.api_key, str) else ""
        if not key:
            raise ValueError("the Attentive API key is empty")
        if not all(0x21 <= ord(c) <= 0x7E for c in key):
            # Refused here, naming no character: sending would fail on every request with an error that
            # quotes the header value (httpx) or names the character and its position (UnicodeEncodeError).
            raise ValueError(
                "the Attentive API key contains whitespace, control characters or non-ASCII characters; "
                "copy the key again from Attentive (a key is printable ASCII)"
            )
        object.__setattr__(self, "api_key", key)
        rates: dict[str, float] = {}
        for name, rate in dict(self.rate_limits).items():
            try:
                endpoint = EndpointName(name)
            except ValueError:
                raise ValueError(
                    f"rate_limits: unknown endpoint {name!r}; expected one of {endpoint_names()}"
                ) from None
            rate = float(rate)
            if not rate > 0 or rate == float("inf"):
                raise ValueError(f"rate_limits[{endpoint.value!r}] must be a positive number, got {rate!r}")
            rates[endpoint] = rate
        object.__setattr__(self, "rate_limits", MappingProxyType(rates))
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts!r}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {self.max_concurrency!r}")

    def request_headers(self) -> dict[str, str]:
        """The headers of every API request: the bearer key, the user agent and JSON both ways."""
        return {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": self.user_agent,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    def secret_values(self) -> list[str]:
        """What must never be shown: the API key and the passwords in the proxy and Redis URLs (each as
        written and decoded), for :func:`~airflow_provider_attentive.client.scrub.scrub` and log maskers."""
        return [self.api_key, *url_secrets(self.proxy), *url_secrets(self.rate_limit_redis_url)]

    def rate_for(self, endpoint_name: EndpointName | str) -> float:
        """Requests per second allowed on ``endpoint_name``: the override or Attentive's default."""
        endpoint = get_endpoint(endpoint_name)
        return self.rate_limits.get(endpoint.name, endpoint.default_rate)

    def rates(self) -> dict[str, float]:
        """:meth:`rate_for` of every endpoint (keyed by :class:`EndpointName`): the whole key's budget."""
        return {name: self.rate_for(name) for name in ENDPOINTS}

    def local_rates(self) -> dict[str, float]:
        """What the in-process limiter enforces: :meth:`rates` times ``rate_limit_share`` (if set)."""
        share = self.rate_limit_share if self.rate_limit_share is not None else 1.0
        return {name: rate * share for name, rate in self.rates().items()}
