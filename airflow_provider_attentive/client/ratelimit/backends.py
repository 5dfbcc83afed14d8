"""Where a transport's rate budget lives: the backend names and the limiter each one builds.

``"local"``: this process only (:class:`~airflow_provider_attentive.client.ratelimit.local.LimiterRegistry`);
``"redis"``: shared through Redis; ``"sql"``: shared through a SQL table, which needs a database connection
the caller opens, so the caller passes that limiter itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_attentive.client.ratelimit.base import RateLimiter

if TYPE_CHECKING:
    from airflow_provider_attentive.client.config import TransportConfig
    from airflow_provider_attentive.client.ratelimit.local import LimiterRegistry

__all__ = ["RATE_LIMIT_BACKENDS", "limiter_for_config"]

RATE_LIMIT_BACKENDS = ("local", "redis", "sql")


def limiter_for_config(config: TransportConfig, registry: LimiterRegistry | None = None) -> RateLimiter:
    """The limiter ``config.rate_limit_backend`` asks for, when the caller did not pass one.

    ``registry`` (default: the process-wide one) holds the windows of the local backend.
    """
    if config.rate_limit_backend == "local":
        from airflow_provider_attentive.client.ratelimit.local import DEFAULT_REGISTRY

        return (registry or DEFAULT_REGISTRY).limiter_for(config.base_url, config.api_key, config.local_rates())
    if config.rate_limit_backend == "redis":
        from airflow_provider_attentive.client.ratelimit.redis import RedisRateLimiter

        assert config.rate_limit_redis_url is not None  # checked by TransportConfig
        return RedisRateLimiter(
            config.rate_limit_redis_url,
            base_url=config.base_url,
            api_key=config.api_key,
            rates=config.rates(),
            share=config.rate_limit_share,
        )
    raise ValueError(
        f"rate_limit_backend {config.rate_limit_backend!r} needs a database connection: use AttentiveHook "
        "(connection extra rate_limit_sql_conn_id) or pass limiter=SqlRateLimiter(...)"
    )
