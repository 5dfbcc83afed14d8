"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

The connection form is declared here (``conn-fields`` / ``ui-field-behaviour``) because Airflow 3.3's
React UI reads it without importing the hook; ``AttentiveHook.get_ui_field_behaviour`` mirrors it for
older 3.x UIs.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_attentive import __version__
from airflow_provider_attentive.client.config import DEFAULT_BASE_URL
from airflow_provider_attentive.client.ratelimit.backends import RATE_LIMIT_BACKENDS


def _number_field(label: str, description: str, *, integer: bool = False, minimum: float = 0) -> dict[str, Any]:
    return {
        "label": label,
        "description": description,
        "schema": {"type": ["integer" if integer else "number", "null"], "minimum": minimum},
    }


CONN_FIELDS: dict[str, dict[str, Any]] = {
    "rate_limit_attributes": _number_field(
        "Attributes requests/s", "Override the 150 requests/s limit for POST /v1/attributes/custom."
    ),
    "rate_limit_events": _number_field(
        "Events requests/s", "Override the 150 requests/s limit for POST /v1/events/custom."
    ),
    "rate_limit_subscribe": _number_field(
        "Subscribe requests/s", "Override the 10 requests/s limit for POST /v1/subscriptions."
    ),
    "rate_limit_unsubscribe": _number_field(
        "Unsubscribe requests/s", "Override the 5 requests/s limit for POST /v1/subscriptions/unsubscribe."
    ),
    "rate_limit_identity": _number_field(
        "Identity requests/s", "Override the 10 requests/s limit for the identity-resolution endpoint."
    ),
    "rate_limit_bulk": _number_field(
        "Bulk attributes requests/s",
        "Override the 100 requests/s limit for POST /v2/bulk/user/attributes (up to 256 users per request).",
    ),
    "rate_limit_bulk_job": _number_field(
        "Bulk job status requests/s",
        "Override the 100 requests/s limit for GET /v2/bulk/job/{id}, which the triggerer polls while it waits.",
    ),
    "rate_limit_default": _number_field(
        "Other endpoints requests/s", "Override the 150 requests/s limit used for every other v1 endpoint."
    ),
    "timeout": _number_field("Request timeout (s)", "Seconds to wait for each HTTP request. Default 30."),
    "max_attempts": _number_field(
        "Max attempts",
        "Attempts per request for 5xx, 408 and network errors (429 waits do not count). Default 6.",
        integer=True,
        minimum=1,
    ),
    "max_concurrency": _number_field(
        "Max concurrent requests", "Requests in flight at once per task. Default 64.", integer=True, minimum=1
    ),
    "rate_limit_backend": {
        "label": "Rate-limit backend",
        "description": (
            "Where the per-key rate budget lives. local (default): each task keeps to the limits on its own; "
            "redis: every task using this key shares one budget in Redis (set the Redis URL); sql: shared "
            "through a table on a SQL connection (set its connection id; suits low rates such as subscribe)."
        ),
        "schema": {"type": ["string", "null"], "enum": [*RATE_LIMIT_BACKENDS, None]},
    },
    "rate_limit_redis_url": {
        "label": "Rate-limit Redis URL",
        "description": (
            "For the redis backend: e.g. redis://redis:6379/2 (the Celery broker's Redis, another database "
            "number). Only a fingerprint of the API key is stored there."
        ),
        "schema": {"type": ["string", "null"]},
    },
    "rate_limit_sql_conn_id": {
        "label": "Rate-limit SQL connection id",
        "description": (
            "For the sql backend: a SQL connection every worker can reach (the sync state connection, say); "
            "the table attentive_rate_limit is created there."
        ),
        "schema": {"type": ["string", "null"]},
    },
    "rate_limit_share": {
        "label": "Rate-limit share (0-1]",
        "description": (
            "Fraction of each limit one task may use on its own. local backend: always (1/N when an Airflow "
            "pool of N slots runs N tasks on this key). redis/sql: only while that backend is unreachable "
            "(default 1 / the tasks recently seen on the key)."
        ),
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
    },
    "allow_insecure_http": {
        "label": "Allow plain http:// base URL",
        "description": (
            "Accept http:// to a non-loopback host, e.g. an emulator inside a docker network. The API key then "
            "travels unencrypted: never for the real Attentive API."
        ),
        "schema": {"type": ["boolean", "null"]},
    },
    "proxy": {
        "label": "Proxy URL",
        "description": (
            "https://[user:password@]host:port of the proxy to send through (http:// only on loopback, or with "
            "allow_insecure_http). HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and .netrc are never used."
        ),
        "schema": {"type": ["string", "null"]},
    },
}

# Placeholders only work for host/password/login/schema/port: Airflow treats any other key (``description``
# included) as an extra field, renames it ``extra__attentive__<key>`` and never shows it, so none is set here.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["port", "login", "schema"],
    "relabeling": {"password": "API key", "host": "Base URL"},
    "placeholders": {
        "host": DEFAULT_BASE_URL,
        "password": "Attentive private-app API key",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider description Airflow validates against ``provider_info.schema.json``."""
    return {
        "package-name": "airflow-provider-attentive",
        "name": "Attentive",
        "description": "Sync warehouse rows to Attentive custom attributes, custom events, subscriptions and segments.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Attentive",
                "external-doc-url": "https://docs.attentive.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Attentive",
                "python-modules": ["airflow_provider_attentive.hooks.attentive"],
            }
        ],
        "operators": [
            {
                "integration-name": "Attentive",
                "python-modules": [
                    "airflow_provider_attentive.operators.attributes",
                    "airflow_provider_attentive.operators.events",
                    "airflow_provider_attentive.operators.subscriptions",
                    "airflow_provider_attentive.operators.segments",
                ],
            }
        ],
        # Asset("attentive://...") URIs: checked at parse time, created by hook lineage, translated for OpenLineage.
        "asset-uris": [
            {
                "schemes": ["attentive"],
                "handler": "airflow_provider_attentive.assets.sanitize_uri",
                "factory": "airflow_provider_attentive.assets.create_asset",
                "to_openlineage_converter": "airflow_provider_attentive.assets.convert_asset_to_openlineage",
            }
        ],
        "triggers": [
            {
                "integration-name": "Attentive",
                "python-modules": ["airflow_provider_attentive.triggers.bulk_job"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "attentive",
                "hook-class-name": "airflow_provider_attentive.hooks.attentive.AttentiveHook",
                "hook-name": "Attentive",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
