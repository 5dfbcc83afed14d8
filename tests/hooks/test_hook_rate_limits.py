"""The hook's rate-limit settings: connection extras, the shared backends (Redis, SQL) behind a connection."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.client import (
    RATE_LIMIT_BACKENDS,
    AttentiveTransport,
    EndpointName,
    LocalRateLimiter,
    RedisRateLimiter,
    SqlRateLimiter,
)
from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.get_provider_info import CONN_FIELDS
from airflow_provider_attentive.hooks.attentive import AttentiveHook, config_from_connection
from tests.helpers.redis import RedisServer

KEY = "sk_live_shared_budget_7f3a9c"


def attrs(i: int) -> dict[str, Any]:
    return {"user": {"phone": f"+1415{3000000 + i:07d}"}, "properties": {"tier": "gold"}}


# -- configuration: extras, transport, form --------------------------------------------------------------


COMPOSE_EXTRA = {
    "allow_insecure_http": True,
    "rate_limit_backend": "redis",
    "rate_limit_redis_url": "redis://redis:6379/2",
    "timeout": 30,
}


def test_the_docker_compose_connection_extras_are_understood() -> None:
    config = config_from_connection("c", "http://attentive-emulator:8765", 8765, "compose-demo-key", COMPOSE_EXTRA)
    assert config.base_url == "http://attentive-emulator:8765"
    assert config.rate_limit_backend == "redis"
    assert config.rate_limit_redis_url == "redis://redis:6379/2"
    assert config.allow_insecure_http is True
    assert "redis://" not in repr(config)  # the URL may carry a password


def test_plain_http_to_a_remote_host_needs_allow_insecure_http(caplog: pytest.LogCaptureFixture) -> None:
    extra = {k: v for k, v in COMPOSE_EXTRA.items() if k != "allow_insecure_http"}
    with pytest.raises(ValueError, match="allow_insecure_http"):
        config_from_connection("c", "http://attentive-emulator:8765", None, "k", extra)
    with pytest.raises(ValueError, match="allow_insecure_http"):
        config_from_connection(
            "c", "http://attentive-emulator:8765", None, "k", {**extra, "allow_insecure_http": "false"}
        )
    config_from_connection("c", "http://attentive-emulator:8765", None, "k", {**extra, "allow_insecure_http": "true"})
    assert any("never for the real API" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rate_limit_backend": "memcached"}, "must be one of local, redis, sql"),
        ({"rate_limit_backend": "redis"}, "needs rate_limit_redis_url"),
        ({"rate_limit_backend": "sql"}, "needs the extra 'rate_limit_sql_conn_id'"),
        ({"rate_limit_share": 1.5}, r"fraction in \(0, 1\]"),
        ({"rate_limit_share": 0}, "greater than 0"),
        ({"allow_insecure_http": "maybe"}, "true or false"),
        ({"rate_limit_redis_url": 5}, "must be a string"),
    ],
)
def test_bad_rate_limit_extras_name_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        config_from_connection("my_conn", None, None, "k", extra)
    assert "'my_conn'" in str(info.value)


def test_local_backend_with_a_share_scales_every_limit() -> None:
    config = config_from_connection("c", None, None, "k", {"rate_limit_share": "0.25", "rate_limit_subscribe": 8})
    assert config.rate_limit_backend == "local"
    with AttentiveTransport(config) as transport:
        limiter = transport.limiter
        assert isinstance(limiter, LocalRateLimiter)
        assert limiter.limiter("attributes").rate == 37.5
        assert limiter.limiter("subscribe").rate == 2.0


def test_connection_form_declares_the_new_extras() -> None:
    for name in ("rate_limit_backend", "rate_limit_redis_url", "rate_limit_sql_conn_id", "rate_limit_share"):
        assert "null" in CONN_FIELDS[name]["schema"]["type"]
    assert CONN_FIELDS["rate_limit_backend"]["schema"]["enum"] == ["local", "redis", "sql", None]
    assert CONN_FIELDS["allow_insecure_http"]["schema"]["type"] == ["boolean", "null"]


def test_rate_limit_default_covers_every_endpoint_without_an_extra_of_its_own() -> None:
    config = config_from_connection("c", None, None, "k", {"rate_limit_default": 40, "rate_limit_subscribe": 8})
    assert config.rate_limits == {
        EndpointName.ME: 40.0,
        EndpointName.SUBSCRIPTIONS_READ: 40.0,
        EndpointName.SUBSCRIBE: 8.0,
    }


# -- the hook ---------------------------------------------------------------------------------------------


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_hook_test_connection_reports_an_unreachable_redis(
    monkeypatch: pytest.MonkeyPatch, closed_port_url: str
) -> None:
    port = closed_port_url.rsplit(":", 1)[1]
    extra = {"rate_limit_backend": "redis", "rate_limit_redis_url": f"redis://:pw-77x@127.0.0.1:{port}/2"}
    set_conn(
        monkeypatch, "attentive_default", conn_type="attentive", host="http://127.0.0.1:1", password=KEY, extra=extra
    )
    ok, message = AttentiveHook().test_connection()
    assert not ok
    assert "cannot reach Redis" in message and "pw-77x" not in message


def test_hook_with_the_redis_backend_sends_through_the_shared_budget(
    monkeypatch: pytest.MonkeyPatch, attentive_emulator: Emulator, redis_server: RedisServer
) -> None:
    extra = {"rate_limit_backend": "redis", "rate_limit_redis_url": redis_server.url}
    set_conn(
        monkeypatch,
        "attentive_default",
        conn_type="attentive",
        host=attentive_emulator.url,
        password="test-key",
        extra=extra,
    )
    hook = AttentiveHook()
    try:
        assert hook.test_connection()[0]
        assert hook.post_custom_attributes(attrs(1)).ok
        assert isinstance(hook.get_conn().limiter, RedisRateLimiter)
    finally:
        hook.close()


def test_hook_with_the_sql_backend(
    monkeypatch: pytest.MonkeyPatch, attentive_emulator: Emulator, tmp_path: Path
) -> None:
    db = tmp_path / "limits.db"
    set_conn(monkeypatch, "limits_db", conn_type="sqlite", host=str(db))
    extra = {"rate_limit_backend": "sql", "rate_limit_sql_conn_id": "limits_db"}
    set_conn(
        monkeypatch,
        "attentive_default",
        conn_type="attentive",
        host=attentive_emulator.url,
        password="test-key",
        extra=extra,
    )
    hook = AttentiveHook()
    try:
        assert hook.subscribe({"user": {"phone": "+14155550199"}, "signUpSourceId": "12345"}).status is not None
        assert isinstance(hook.get_conn().limiter, SqlRateLimiter)
    finally:
        hook.close()
    rows = sqlite3.connect(db).execute("SELECT bucket FROM attentive_rate_limit").fetchall()
    assert [r[0].split(":", 1)[1] for r in rows] == ["subscribe"]


def test_hook_with_the_sql_backend_and_a_missing_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"rate_limit_backend": "sql", "rate_limit_sql_conn_id": "nope_not_there"}
    set_conn(
        monkeypatch, "attentive_default", conn_type="attentive", host="http://127.0.0.1:1", password=KEY, extra=extra
    )
    hook = AttentiveHook()
    with pytest.raises(ValueError, match="rate_limit_sql_conn_id 'nope_not_there'"):
        hook.get_conn()


# -- the v2 endpoints' extras ---------------------------------------------------------------------------------


def test_every_v2_endpoint_has_an_extra_of_its_own() -> None:
    extra = {
        "rate_limit_bulk": "20",  # URI-form connections deliver strings
        "rate_limit_bulk_job": 4.5,
        "rate_limit_segment_members_add": 30,
        "rate_limit_segments_list": 7,
        "rate_limit_default": 40,
    }
    config = config_from_connection("c", None, None, "k", extra)
    assert config.rate_for("bulk") == 20.0
    assert config.rate_for("bulk_job") == 4.5
    assert config.rate_for("segment_members_add") == 30.0
    assert config.rate_for("segments_list") == 7.0
    # rate_limit_default keeps to the v1 endpoints without an extra; the other v2 ones keep Attentive's 100/s.
    assert config.rate_for("segment_create") == 100.0
    assert config.rate_for("me") == 40.0


@pytest.mark.parametrize("name", ["rate_limit_bulk", "rate_limit_bulk_job", "rate_limit_segment_archive"])
def test_a_bad_v2_rate_names_its_extra(name: str) -> None:
    with pytest.raises(ValueError, match=f"extra '{name}'"):
        config_from_connection("c", None, None, "k", {name: "fast"})


def test_the_form_has_the_bulk_rate_fields_and_the_backends_from_the_client() -> None:
    for name, path in (("rate_limit_bulk", "/v2/bulk/user/attributes"), ("rate_limit_bulk_job", "/v2/bulk/job/")):
        field = CONN_FIELDS[name]
        assert field["schema"]["type"] == ["number", "null"]
        assert "100 requests/s" in field["description"] and path in field["description"]
    assert CONN_FIELDS["rate_limit_backend"]["schema"]["enum"] == [*RATE_LIMIT_BACKENDS, None]


def test_the_bulk_job_budget_is_its_own_bucket_in_sql(
    monkeypatch: pytest.MonkeyPatch, attentive_emulator: Emulator, tmp_path: Path
) -> None:
    db = tmp_path / "limits.db"
    set_conn(monkeypatch, "limits_db", conn_type="sqlite", host=str(db))
    extra = {"rate_limit_backend": "sql", "rate_limit_sql_conn_id": "limits_db", "rate_limit_bulk_job": 50}
    fields = {"conn_type": "attentive", "host": attentive_emulator.url, "password": "test-key", "extra": extra}
    set_conn(monkeypatch, "attentive_default", **fields)
    hook = AttentiveHook()
    try:
        users = [{"identifiers": {"phone": "+14155550142"}, "attributes": {"custom": {"tier": "gold"}}}]
        submitted = hook.get_conn().request(EndpointName.BULK, {"users": users})
        assert submitted.status == 202, submitted.error
        job = {"bulkJobId": submitted.body["batchJobId"]}
        assert hook.get_conn().request(EndpointName.BULK_JOB, path_params=job).ok
        assert hook.get_conn().limiter._shapes["bulk_job"].rate == 50  # type: ignore[attr-defined]
    finally:
        hook.close()
    rows = sqlite3.connect(db).execute("SELECT bucket FROM attentive_rate_limit").fetchall()
    assert sorted(r[0].split(":", 1)[1] for r in rows) == ["bulk", "bulk_job"]


def test_the_bulk_budgets_live_in_redis_like_the_others(
    attentive_emulator: Emulator, redis_server: RedisServer
) -> None:
    extra = {"rate_limit_backend": "redis", "rate_limit_redis_url": redis_server.url, "rate_limit_bulk": 25}
    config = config_from_connection("c", attentive_emulator.url, None, "test-key", extra)
    with AttentiveTransport(config) as transport:
        assert isinstance(transport.limiter, RedisRateLimiter)
        users = [{"identifiers": {"phone": "+14155550143"}, "attributes": {"custom": {"tier": "gold"}}}]
        assert transport.request(EndpointName.BULK, {"users": users}).status == 202
        assert transport.limiter._shapes["bulk"].rate == 25


# -- the connection read from an event loop (triggers) ----------------------------------------------------------


def test_aget_config_reads_the_connection_like_config(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"rate_limit_bulk_job": 3, "timeout": "12"}
    fields = {"conn_type": "attentive", "host": "https://api.example.test", "password": KEY, "extra": extra}
    set_conn(monkeypatch, "attentive_async", **fields)
    config = asyncio.run(AttentiveHook("attentive_async").aget_config())
    assert config == AttentiveHook("attentive_async").config
    assert config.rate_for("bulk_job") == 3 and config.timeout == 12


def test_aget_config_errors_name_the_field_not_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, "attentive_async", conn_type="attentive", password=KEY, extra={"rate_limit_bulk": "fast"})
    with pytest.raises(ValueError, match="extra 'rate_limit_bulk'") as info:
        asyncio.run(AttentiveHook("attentive_async").aget_config())
    assert KEY not in str(info.value)
