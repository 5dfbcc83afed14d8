"""Hostile connections: a key that cannot be sent, credentials in Redis and proxy URLs, a key saved with a newline.

Whatever the connection holds, the hook refuses it before sending (a task failure Airflow does not retry),
never shows a secret in its errors or Test message, and registers every secret with Airflow's masker in the
form that is really used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_attentive.hooks import attentive as hook_module
from airflow_provider_attentive.hooks.attentive import AttentiveHook
from tests.helpers.operators import context, operator
from tests.helpers.secrets import leaked, new_secret
from tests.helpers.stub_server import StubServer
from tests.helpers.warehouse import Warehouse, create_customers


def set_conn(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ATTENTIVE_DEFAULT", json.dumps({"conn_type": "attentive", **fields}))


@pytest.fixture
def masked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every value the hook hands to Airflow's secrets masker (which is still called)."""
    values: list[str] = []
    real = hook_module.mask_secret

    def record(value: Any, name: str | None = None) -> None:
        values.append(value)
        real(value, name)

    monkeypatch.setattr(hook_module, "mask_secret", record)
    return values


# -- the key -------------------------------------------------------------------------------------------------


def test_a_key_saved_with_a_trailing_newline_is_masked_as_it_is_sent(
    stub_server: StubServer, monkeypatch: pytest.MonkeyPatch, masked: list[str]
) -> None:
    key = new_secret()
    set_conn(monkeypatch, host=stub_server.url, password=f"{key}\n")
    hook = AttentiveHook()
    try:
        assert hook.get_me().ok
    finally:
        hook.close()
    assert stub_server.requests[0].headers["Authorization"] == f"Bearer {key}"
    assert key in masked and f"{key}\n" in masked


@pytest.mark.parametrize("odd", ["\u00e9", "\u00a0", "\u2028"])
def test_a_key_that_cannot_be_sent_fails_the_connection_without_naming_it(
    stub_server: StubServer, monkeypatch: pytest.MonkeyPatch, odd: str
) -> None:
    broken = new_secret()[:12] + odd + new_secret()
    set_conn(monkeypatch, host=stub_server.url, password=broken)
    with pytest.raises(ValueError, match=r"'attentive_default'.*non-ASCII") as info:
        AttentiveHook().get_conn()
    ok, message = AttentiveHook().test_connection()
    assert not ok and "non-ASCII" in message
    for text in (str(info.value), message):
        assert not any(ord(c) > 0x7E for c in text) and "position" not in text and leaked(broken, text) == set()
    assert stub_server.requests == []


def test_a_sync_with_a_key_that_cannot_be_sent_fails_without_retry_and_sends_nothing(
    stub_server: StubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.db"
    create_customers(Warehouse(warehouse), 3)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(warehouse)}))
    set_conn(monkeypatch, host=stub_server.url, password="sk_live_\u00e9t\u00e9_0123456789")
    op = operator("attributes", sql="SELECT * FROM customers", primary_key="customer_id")
    with pytest.raises(AirflowFailException, match="non-ASCII") as info:
        op.execute(context())
    assert "\u00e9" not in str(info.value)
    assert stub_server.requests == []


# -- Redis URLs ----------------------------------------------------------------------------------------------

REDIS_FORMS = [
    "redis://user:{p}@127.0.0.1:{port}/2",
    "rediss://:{p}@127.0.0.1:{port}/0",
    "redis://127.0.0.1:{port}/0?password={p}",
    "redis://127.0.0.1:{port}/0?username=ops&password={p}",
    "unix://:{p}@/nonexistent/redis.sock?db=0&password={p}",
]


@pytest.mark.parametrize("form", REDIS_FORMS)
def test_redis_credentials_are_masked_and_kept_out_of_the_test_message(
    closed_port_url: str, monkeypatch: pytest.MonkeyPatch, masked: list[str], form: str
) -> None:
    password = new_secret()
    url = form.format(p=password, port=closed_port_url.rsplit(":", 1)[1])
    set_conn(
        monkeypatch,
        host="https://api.attentivemobile.com",
        password=new_secret(),
        extra={"rate_limit_backend": "redis", "rate_limit_redis_url": url},
    )
    ok, message = AttentiveHook().test_connection()
    assert not ok and "cannot reach Redis" in message
    assert leaked(password, message) == set()
    assert password in masked


# -- proxies -------------------------------------------------------------------------------------------------


def test_proxy_credentials_are_masked_and_a_dead_proxy_is_reported_without_them(
    stub_server: StubServer, closed_port_url: str, monkeypatch: pytest.MonkeyPatch, masked: list[str]
) -> None:
    password = new_secret()
    proxy = closed_port_url.replace("http://", f"http://ops:{password}@")
    set_conn(monkeypatch, host=stub_server.url, password=new_secret(), extra={"proxy": proxy})
    ok, message = AttentiveHook().test_connection()
    assert not ok and message.startswith("Could not reach Attentive")
    assert leaked(password, message) == set()
    assert password in masked
    assert stub_server.requests == []  # it went to the (dead) proxy, not around it


def test_a_plain_http_proxy_to_another_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    password = new_secret()
    set_conn(
        monkeypatch,
        host="https://api.attentivemobile.com",
        password=new_secret(),
        extra={"proxy": f"http://ops:{password}@proxy.corp.example:3128"},
    )
    with pytest.raises(ValueError, match=r"'attentive_default'.*plain http:// proxy") as info:
        AttentiveHook().get_conn()
    assert leaked(password, str(info.value)) == set()
    set_conn(
        monkeypatch,
        host="https://api.attentivemobile.com",
        password=new_secret(),
        extra={"proxy": "http://proxy.corp.example:3128", "allow_insecure_http": "true"},
    )
    assert AttentiveHook().config.proxy == "http://proxy.corp.example:3128"
