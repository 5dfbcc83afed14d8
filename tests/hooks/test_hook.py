"""AttentiveHook: Airflow connection handling, test_connection, endpoint methods and CLI integration."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from airflow.sdk import BaseHook, Connection

from airflow_provider_attentive.client import Request, RequestOutcome
from airflow_provider_attentive.emulator import Emulator
from airflow_provider_attentive.get_provider_info import UI_FIELD_BEHAVIOUR
from airflow_provider_attentive.hooks.attentive import AttentiveHook
from tests.helpers.stub_server import StubReply, StubServer

PHONE = "+14155550123"


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str = "attentive_default", **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "attentive", **fields}))


@pytest.fixture
def hook_factory() -> Any:
    hooks: list[AttentiveHook] = []

    def factory(conn_id: str = "attentive_default") -> AttentiveHook:
        hook = AttentiveHook(conn_id)
        hooks.append(hook)
        return hook

    yield factory
    for hook in hooks:
        hook.close()


# -- test_connection -----------------------------------------------------------------------------


def test_test_connection_names_the_company(attentive_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, host=attentive_emulator.url, password="test-key", extra={"timeout": 5})
    assert AttentiveHook().test_connection() == (True, "Connected to Emulated Co (application Attentive Emulator)")
    # The path the UI and CLI take: connection -> registered hook class -> test_connection.
    conn = BaseHook.get_connection("attentive_default")
    assert isinstance(conn.get_hook(), AttentiveHook)
    assert conn.test_connection() == (True, "Connected to Emulated Co (application Attentive Emulator)")


def test_test_connection_with_a_wrong_key(attentive_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk_live_WRONG_" + uuid.uuid4().hex
    set_conn(monkeypatch, host=attentive_emulator.url, password=key)
    ok, message = AttentiveHook().test_connection()
    assert not ok
    assert message.startswith("Attentive rejected the API key (401 Unauthorized)")
    assert key not in message


def test_test_connection_when_access_is_denied(stub_server: StubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    stub_server.script(StubReply(403, {"error": {"id": 1, "message": "Access Denied"}}))
    key = "sk_live_DENIED_" + uuid.uuid4().hex
    set_conn(monkeypatch, host=stub_server.url, password=key)
    ok, message = AttentiveHook().test_connection()
    assert not ok
    assert message.startswith("Attentive refused access (403 Forbidden)")
    assert key not in message


def test_test_connection_when_nothing_listens(closed_port_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk_live_REFUSED_" + uuid.uuid4().hex
    set_conn(monkeypatch, host=closed_port_url, password=key)
    ok, message = AttentiveHook().test_connection()
    assert not ok
    assert message.startswith(f"Could not reach Attentive at {closed_port_url}")
    assert "ConnectError" in message
    assert key not in message


def test_test_connection_with_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk_live_CLEAR_" + uuid.uuid4().hex
    set_conn(monkeypatch, host="http://api.attentivemobile.com", password=key)
    ok, message = AttentiveHook().test_connection()
    assert not ok and "unencrypted" in message and key not in message
    set_conn(monkeypatch, host="api.attentivemobile.com")
    ok, message = AttentiveHook().test_connection()
    assert not ok and "has no API key" in message
    ok, message = AttentiveHook("no_such_connection").test_connection()
    assert not ok and "no_such_connection" in message


# -- reading the connection ----------------------------------------------------------------------


def test_defaults(monkeypatch: pytest.MonkeyPatch, hook_factory: Any) -> None:
    set_conn(monkeypatch, password="k")
    config = hook_factory().config
    assert config.base_url == "https://api.attentivemobile.com"
    assert (config.timeout, config.max_attempts, config.max_concurrency) == (30.0, 6, 64)
    assert {n: config.rate_for(n) for n in ("attributes", "subscribe", "unsubscribe", "identity")} == {
        "attributes": 150,
        "subscribe": 10,
        "unsubscribe": 5,
        "identity": 10,
    }


def test_uri_form_extras_are_coerced(
    attentive_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, hook_factory: Any
) -> None:
    query = (
        "rate_limit_subscribe=2.5&rate_limit_events=40&rate_limit_default=20&timeout=7"
        "&max_attempts=3&max_concurrency=8&rate_limit_identity="
    )
    host = quote(attentive_emulator.url, safe="")
    monkeypatch.setenv("AIRFLOW_CONN_ATTENTIVE_URI", f"attentive://:test-key@{host}/?{query}")
    hook = hook_factory("attentive_uri")
    config = hook.config
    assert config.base_url == attentive_emulator.url
    assert config.rate_for("subscribe") == 2.5
    assert config.rate_for("events") == 40.0
    assert config.rate_for("me") == config.rate_for("subscriptions_read") == 20.0
    assert config.rate_for("identity") == 10  # empty value: default kept
    assert config.rate_for("attributes") == 150
    assert config.timeout == 7.0
    assert config.max_attempts == 3 and isinstance(config.max_attempts, int)
    assert config.max_concurrency == 8 and isinstance(config.max_concurrency, int)
    assert hook.get_me().ok


def test_a_connection_of_another_type_is_named_as_such(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = "sk_live_OTHER_" + uuid.uuid4().hex
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db"), "password": key})
    )
    with pytest.raises(ValueError) as info:
        _ = AttentiveHook("warehouse").config
    assert str(info.value).startswith("connection 'warehouse' is of type 'sqlite', not 'attentive'")
    assert key not in str(info.value)
    ok, message = AttentiveHook("warehouse").test_connection()
    assert not ok and "is of type 'sqlite'" in message and key not in message


@pytest.mark.parametrize(
    "uri",
    [
        # No type at all, and Airflow's generic HTTP types, carry the same fields and keep working.
        json.dumps({"host": "https://attentive.example", "password": "k"}),
        "https://:k@attentive.example",
        json.dumps({"conn_type": "http", "host": "https://attentive.example", "password": "k"}),
    ],
)
def test_untyped_and_http_connections_are_accepted(
    monkeypatch: pytest.MonkeyPatch, hook_factory: Any, uri: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ATTENTIVE_LOOSE", uri)
    config = hook_factory("attentive_loose").config
    assert (config.base_url, config.api_key) == ("https://attentive.example", "k")


def test_uri_form_host_and_port(monkeypatch: pytest.MonkeyPatch, hook_factory: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ATTENTIVE_PORT", "attentive://:k@attentive.example:8443")
    assert hook_factory("attentive_port").config.base_url == "https://attentive.example:8443"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout", "abc"),
        ("timeout", "0"),
        ("max_attempts", "2.5"),
        ("max_attempts", "0"),
        ("max_concurrency", True),
        ("rate_limit_events", "-1"),
        ("rate_limit_subscribe", "0"),
        ("rate_limit_default", "fast"),
    ],
)
def test_bad_extras_name_the_field(monkeypatch: pytest.MonkeyPatch, field: str, value: Any) -> None:
    set_conn(monkeypatch, password="k", extra={field: value})
    with pytest.raises(ValueError, match=f"extra '{field}'"):
        _ = AttentiveHook().config


def test_api_key_is_registered_with_the_secrets_masker(monkeypatch: pytest.MonkeyPatch, hook_factory: Any) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    key = "sk_live_MASKME_" + uuid.uuid4().hex
    assert key in redact(f"key={key}")  # not masked before the hook has read it
    set_conn(monkeypatch, password=key)
    _ = hook_factory().config
    assert redact(f"key={key}") == "key=***"


def test_ui_field_behaviour_mirrors_provider_info() -> None:
    behaviour = AttentiveHook.get_ui_field_behaviour()
    assert behaviour == {
        "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
        "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
        "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
    }
    assert behaviour["relabeling"]["password"] == "API key"


def test_hook_identity() -> None:
    assert (AttentiveHook.conn_type, AttentiveHook.conn_name_attr) == ("attentive", "attentive_conn_id")
    assert (AttentiveHook.default_conn_name, AttentiveHook.hook_name) == ("attentive_default", "Attentive")
    assert AttentiveHook(attentive_conn_id="other").attentive_conn_id == "other"


# -- endpoint methods ----------------------------------------------------------------------------


def test_endpoint_methods(attentive_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, hook_factory: Any) -> None:
    set_conn(monkeypatch, host=attentive_emulator.url, password="test-key")
    hook = hook_factory()
    assert hook.get_conn() is hook.get_conn()
    assert hook.get_me().body["companyName"] == "Emulated Co"
    user = {"phone": PHONE}
    assert hook.post_custom_attributes({"user": user, "properties": {"tier": "gold"}}).ok
    assert hook.post_custom_event({"type": "Signed Up", "externalEventId": "ev-1", "user": user}).ok
    subscribed = hook.subscribe({"user": user, "signUpSourceId": "123"})
    assert subscribed.outcome is RequestOutcome.OK and subscribed.status == 202
    assert hook.get_subscriptions(phone=PHONE).ok
    assert hook.get_subscriptions(email="person@example.com").ok
    assert hook.unsubscribe({"user": user, "notification": {"disabled": True}}).ok
    assert hook.identify({"phone": PHONE, "clientUserId": "u-123"}).ok
    bodies = [{"user": {"phone": f"+1415555{i:04d}"}, "properties": {"n": i}} for i in range(10)]
    results = list(hook.send_many("attributes", (Request(i, b) for i, b in enumerate(bodies))))
    assert sorted(r.key for r in results) == list(range(10)) and all(r.ok for r in results)
    assert attentive_emulator.client.attributes()
    with pytest.raises(ValueError, match="exactly one"):
        hook.get_subscriptions()
    with pytest.raises(ValueError, match="exactly one"):
        hook.get_subscriptions(phone=PHONE, email="person@example.com")
    transport = hook.get_conn()
    hook.close()
    assert hook.get_conn() is not transport


def test_api_key_absent_from_hook_logs_and_output(
    attentive_emulator: Emulator,
    closed_port_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    key = "sk_live_HOOKSECRET_" + uuid.uuid4().hex
    attentive_emulator.client.add_key(key)
    caplog.set_level(logging.DEBUG)
    messages = []
    set_conn(monkeypatch, host=attentive_emulator.url, password=key)
    hook = AttentiveHook()
    messages.append(hook.test_connection()[1])
    messages.append(str(hook.post_custom_attributes({"user": {}, "properties": {}}).error))
    hook.close()
    set_conn(monkeypatch, host=closed_port_url, password=key)
    messages.append(AttentiveHook().test_connection()[1])
    set_conn(monkeypatch, host="http://example.com", password=key)
    with pytest.raises(ValueError) as info:
        _ = AttentiveHook().config
    messages.append(str(info.value))
    out, err = capfd.readouterr()
    everything = "\n".join([*messages, caplog.text, out, err])
    assert "Connected to" in everything and "HTTP 400" in everything and "Could not reach" in everything
    assert key not in everything


# -- Airflow CLI -----------------------------------------------------------------------------------


def _airflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    airflow = Path(sys.executable).with_name("airflow")
    return subprocess.run([str(airflow), *args], env=env, capture_output=True, text=True, timeout=180)


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    return env


def test_airflow_providers_list_shows_the_provider(tmp_path: Path) -> None:
    proc = _airflow(["providers", "list"], _cli_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "airflow-provider-attentive" in proc.stdout


def test_airflow_connections_test_against_the_emulator(attentive_emulator: Emulator, tmp_path: Path) -> None:
    key = "sk_live_CLI_" + uuid.uuid4().hex
    attentive_emulator.client.add_key(key, company_name="CLI Co")
    env = _cli_env(tmp_path)
    env["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"
    conn = Connection(conn_id="attentive_default", conn_type="attentive", host=attentive_emulator.url, password=key)
    env["AIRFLOW_CONN_ATTENTIVE_DEFAULT"] = conn.as_json()
    proc = _airflow(["connections", "test", "attentive_default"], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Connection success!" in proc.stdout
    assert attentive_emulator.client.stats()["endpoints"]["me"]["status"] == {"200": 1}
    # A revoked key: the CLI prints our explanation, still without the key.
    attentive_emulator.client.remove_key(key)
    proc = _airflow(["connections", "test", "attentive_default"], env)
    assert proc.returncode == 1
    assert "Attentive rejected the API key (401 Unauthorized)" in proc.stdout
    assert key not in proc.stdout + proc.stderr
