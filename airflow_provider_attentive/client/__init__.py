"""The Attentive HTTP client: endpoints, configuration, rate limiting, retries and the transport.

Plain Python (no Airflow imports) so the sync engine and its tests can use it without Airflow; the Airflow
hook in :mod:`airflow_provider_attentive.hooks.attentive` builds its configuration from a connection.

The public names below are imported on first use (PEP 562), so that reading ``client.config`` (as
``get_provider_info`` does whenever Airflow lists providers) does not load httpx and the transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_attentive import _lazy_exports

if TYPE_CHECKING:
    from airflow_provider_attentive.client.config import DEFAULT_BASE_URL, TransportConfig, normalize_base_url
    from airflow_provider_attentive.client.endpoints import ENDPOINTS, Endpoint, EndpointName, get_endpoint
    from airflow_provider_attentive.client.job_poller import JobPollError, PollOutcome, poll_jobs
    from airflow_provider_attentive.client.jobs import JobStatus
    from airflow_provider_attentive.client.models import Request, RequestOutcome, Result
    from airflow_provider_attentive.client.ratelimit.backends import RATE_LIMIT_BACKENDS
    from airflow_provider_attentive.client.ratelimit.base import Permit, RateLimiter
    from airflow_provider_attentive.client.ratelimit.local import (
        DEFAULT_REGISTRY,
        LimiterRegistry,
        LocalRateLimiter,
        SlidingWindowLimiter,
    )
    from airflow_provider_attentive.client.ratelimit.redis import RedisRateLimiter
    from airflow_provider_attentive.client.ratelimit.shared import RateLimitBackendUnavailable
    from airflow_provider_attentive.client.ratelimit.sql import SqlRateLimiter
    from airflow_provider_attentive.client.results import ResultsDownloadError, download_results
    from airflow_provider_attentive.client.retry import RetryPolicy
    from airflow_provider_attentive.client.stats import TransportStats
    from airflow_provider_attentive.client.transport import AttentiveTransport

# Public name -> the submodule that defines it.
_EXPORTS = {
    "DEFAULT_BASE_URL": "config",
    "TransportConfig": "config",
    "normalize_base_url": "config",
    "ENDPOINTS": "endpoints",
    "Endpoint": "endpoints",
    "EndpointName": "endpoints",
    "get_endpoint": "endpoints",
    "JobPollError": "job_poller",
    "PollOutcome": "job_poller",
    "poll_jobs": "job_poller",
    "JobStatus": "jobs",
    "Request": "models",
    "RequestOutcome": "models",
    "Result": "models",
    "RATE_LIMIT_BACKENDS": "ratelimit.backends",
    "Permit": "ratelimit.base",
    "RateLimiter": "ratelimit.base",
    "DEFAULT_REGISTRY": "ratelimit.local",
    "LimiterRegistry": "ratelimit.local",
    "LocalRateLimiter": "ratelimit.local",
    "SlidingWindowLimiter": "ratelimit.local",
    "RedisRateLimiter": "ratelimit.redis",
    "RateLimitBackendUnavailable": "ratelimit.shared",
    "SqlRateLimiter": "ratelimit.sql",
    "ResultsDownloadError": "results",
    "download_results": "results",
    "RetryPolicy": "retry",
    "TransportStats": "stats",
    "AttentiveTransport": "transport",
}

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_REGISTRY",
    "ENDPOINTS",
    "RATE_LIMIT_BACKENDS",
    "AttentiveTransport",
    "Endpoint",
    "EndpointName",
    "JobPollError",
    "JobStatus",
    "LimiterRegistry",
    "LocalRateLimiter",
    "Permit",
    "PollOutcome",
    "RateLimitBackendUnavailable",
    "RateLimiter",
    "RedisRateLimiter",
    "Request",
    "RequestOutcome",
    "Result",
    "ResultsDownloadError",
    "RetryPolicy",
    "SlidingWindowLimiter",
    "SqlRateLimiter",
    "TransportConfig",
    "TransportStats",
    "download_results",
    "get_endpoint",
    "normalize_base_url",
    "poll_jobs",
]


__getattr__ = _lazy_exports(__name__, globals(), {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()})


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
