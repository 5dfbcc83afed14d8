"""The client against hostile input: answers that echo the key, proxies from the environment, broken keys, names
with a trailing newline, credentials in Redis and proxy URLs. Nothing secret comes back out, nothing is sent
where it was not asked to go, and a bad configuration is refused before anything is sent."""

from __future__ import annotations

import ast
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_attentive
from airflow_provider_attentive.client import AttentiveTransport, LimiterRegistry, TransportConfig
from airflow_provider_attentive.client.ratelimit.redis import RedisRateLimiter
from airflow_provider_attentive.client.ratelimit.shared import RateLimitBackendUnavailable
from airflow_provider_attentive.client.ratelimit.sql import SqlRateLimiter
from airflow_provider_attentive.client.scrub import redact_url, scrub, scrub_body, url_secrets
from airflow_provider_attentive.sync.errors import SyncConfigError
from airflow_provider_attentive.sync.state import MESSAGE_MAX, RowOutcome, StateStore
from tests.helpers.engine import sync_engine
from tests.helpers.objects import attributes
from tests.helpers.secrets import leaked, new_secret
from tests.helpers.stub_server import StubReply, StubRequest, StubServer
from tests.helpers.warehouse import create_customers


def transport_for(url: str, key: str, **overrides: Any) -> AttentiveTransport:
    settings: dict[str, Any] = {"backoff_base": 0.01, "backoff_max": 0.05, "max_attempts": 2, **overrides}
    return AttentiveTransport(TransportConfig(url, key, **settings), registry=LimiterRegistry())


# -- 1. secrets echoed in answers ----------------------------------------------------------------------------


def _cut_through(key: str, build: Callable[[str], str], at: int = 500) -> str:
    """Pad ``build``'s text so that the key starts 23 characters before position ``at``: a cut there keeps a
    prefix of the key that replacing the whole key no longer finds."""
    text = build("")
    return build("x" * (at - 23 - text.index(key)))


def echo_json(request: StubRequest) -> Any:
    """A 400 whose JSON body echoes the request headers, padded so that a 500-character cut splits the key."""
    key = request.headers["Authorization"].removeprefix("Bearer ")
    dumped = _cut_through(key, lambda pad: json.dumps({"padding": pad, "received": request.headers}))
    return json.loads(dumped)


def echo_text(request: StubRequest) -> Any:
    """The same as plain text, one ``Name: value`` header per line."""
    key = request.headers["Authorization"].removeprefix("Bearer ")
    lines = "\r\n".join(f"{name}: {value}" for name, value in request.headers.items())
    return _cut_through(key, lambda pad: f"Bad request{pad}\r\n{lines}")


def echo_message(request: StubRequest) -> Any:
    """Attentive's error shape, with the headers echoed inside the message."""
    return {"error": {"message": f"could not parse the request {request.headers!r}"}}


def echo_escaped(request: StubRequest) -> Any:
    """JSON that spells the Authorization header with ``\\u`` escapes: the raw text shows neither word nor key."""
    spelled = "".join(f"\\u{ord(c):04x}" for c in request.headers["Authorization"])
    return f'{{"error": "bad headers", "echo": "{spelled}"}}'.encode()


@pytest.mark.parametrize("echo", [echo_json, echo_text, echo_message, echo_escaped])
def test_an_answer_echoing_the_request_headers_leaves_no_piece_of_the_key_in_the_result(
    stub_server: StubServer, echo: Callable[[StubRequest], Any]
) -> None:
    key = new_secret()
    stub_server.script(StubReply(400, echo))
    with transport_for(stub_server.url, key) as transport:
        result = transport.request("attributes", {"user": {"phone": "+14155550123"}, "properties": {"a": 1}})
    assert result.status == 400 and result.error
    assert key in stub_server.requests[0].headers["Authorization"]  # the echo really carried it
    assert leaked(key, result, result.error, json.dumps(result.body)) == set()
    assert "***" in json.dumps(result.body) + result.error


def test_authorization_values_and_bearer_tokens_are_scrubbed_whatever_the_key(stub_server: StubServer) -> None:
    others = {"bearer": new_secret(), "basic": new_secret(), "proxy": new_secret()}
    stub_server.script(
        StubReply(
            400,
            {
                "error": {"message": f"token Bearer {others['bearer']} is not for this app"},
                "headers": {"authorization": f"Basic {others['basic']}"},
                "raw": f"Proxy-Authorization: Basic {others['proxy']}\r\nHost: x",
            },
        )
    )
    with transport_for(stub_server.url, new_secret()) as transport:
        result = transport.request("me")
    for other in others.values():
        assert leaked(other, result, result.error, json.dumps(result.body)) == set()
    assert result.body["headers"] == {"authorization": "***"}
    assert result.error.startswith("GET /v1/me answered HTTP 400 Bad Request: token Bearer *** is not for this app")


def test_scrub_replaces_each_form_of_a_secret_and_leaves_plain_text_alone() -> None:
    secret = 'a"b/c d+e'
    for form in (secret, json.dumps(secret)[1:-1], "a%22b%2Fc%20d%2Be", "a%22b%2Fc+d%2Be"):
        assert scrub(f"x {form} y", [secret]) == "x *** y"
    assert scrub("Authorization header missing; Unauthorized") == "Authorization header missing; Unauthorized"
    assert scrub('{\\"Authorization\\": \\"Bearer abc\\"}') == '{\\"Authorization\\": \\"***\\"}'
    assert scrub_body({"k": ["Bearer abc", 3, None], f"Bearer {secret}": True}, [secret]) == {
        "k": ["Bearer ***", 3, None],
        "Bearer ***": True,
    }


def test_the_key_echoed_back_reaches_neither_the_state_tables_nor_the_summary_nor_the_log(
    stub_server: StubServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = new_secret()
    stub_server.script(StubReply(400, echo_json))
    conn = sqlite3.connect(tmp_path / "warehouse.db")
    create_customers(conn, 3)
    with transport_for(stub_server.url, key) as transport:
        engine = sync_engine(attributes(), conn, "SELECT * FROM customers", sender=transport, max_failed_ratio=1.0)
        summary = engine.run()
    assert summary["failed"]["added"] == 3
    state = conn.execute("SELECT message FROM attentive_sync_state").fetchall()
    log = conn.execute("SELECT message FROM attentive_sync_log").fetchall()
    assert len(state) == 3 and all("answered HTTP 400" in m for (m,) in state)
    assert leaked(key, state, log, json.dumps(summary), caplog.text) == set()


def test_the_state_store_scrubs_a_message_before_cutting_it(tmp_path: Path) -> None:
    token = new_secret()
    conn = sqlite3.connect(tmp_path / "state.db")
    store = StateStore(conn)
    store.ensure_tables()
    message = "x" * (MESSAGE_MAX - 30) + f"Authorization: Bearer {token}"
    store.write_outcomes("s", "r", [RowOutcome("pk", "add", "failed", message=message, write_state=False)])
    (stored,) = conn.execute("SELECT message FROM attentive_sync_log").fetchone()
    assert stored.endswith("Authorization: ***") and leaked(token, stored) == set()


# -- 2. credentials in Redis URLs ----------------------------------------------------------------------------

REDIS_FORMS = [
    "redis://user:{p}@127.0.0.1:{port}/2",
    "rediss://:{p}@127.0.0.1:{port}/0",
    "redis://127.0.0.1:{port}/0?password={p}",
    "redis://127.0.0.1:{port}/0?username=ops{p}&password={p}",
    "unix://:{p}@/nonexistent/redis.sock?db=0&password={p}",
]


@pytest.mark.parametrize("form", REDIS_FORMS)
def test_redis_url_credentials_are_redacted_in_every_form(form: str) -> None:
    password = new_secret()
    url = form.format(p=password, port=6379)
    shown = redact_url(url)
    assert leaked(password, shown) == set() and "***" in shown
    assert password in url_secrets(url)
    assert all(not s.startswith("ops") for s in url_secrets(url))  # user names are hidden, not masked


def test_redact_url_keeps_what_is_not_a_credential() -> None:
    assert redact_url("redis://redis:6379/2?db=3&socket_timeout=2") == "redis://redis:6379/2?db=3&socket_timeout=2"
    assert redact_url("redis://someone@redis:6379/2") == "redis://***@redis:6379/2"
    assert redact_url("redis://:p%40ss@h/0") == "redis://:***@h/0"
    assert url_secrets("redis://:p%40ss@h/0") == ["p%40ss", "p@ss"]
    assert redact_url("redis://[::1/0?password=x") == "<unparseable URL>"


@pytest.mark.parametrize("form", REDIS_FORMS)
def test_an_unreachable_redis_is_reported_without_its_credentials(form: str, closed_port_url: str) -> None:
    password = new_secret()
    url = form.format(p=password, port=closed_port_url.rsplit(":", 1)[1])
    with pytest.raises(RateLimitBackendUnavailable) as info:
        RedisRateLimiter(url, base_url="https://api.attentivemobile.com", api_key="k", rates={"me": 1}, timeout_s=0.5)
    assert "cannot reach Redis" in str(info.value)
    assert leaked(password, str(info.value)) == set()
    assert "ops" + password[:4] not in str(info.value)


# -- 3. proxies ----------------------------------------------------------------------------------------------


@pytest.fixture
def proxy_server() -> Any:
    """A second stub standing in for a proxy: whatever reaches it is recorded (and answered 200)."""
    server = StubServer()
    try:
        yield server
    finally:
        server.close()


def _proxy_env(monkeypatch: pytest.MonkeyPatch, proxy_url: str, tmp_path: Path) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy_url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password from-netrc\n")
    monkeypatch.setenv("NETRC", str(netrc))


def test_proxies_and_netrc_from_the_environment_are_ignored(
    stub_server: StubServer, proxy_server: StubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _proxy_env(monkeypatch, proxy_server.url, tmp_path)
    key = new_secret()
    with transport_for(stub_server.url, key) as transport:
        assert transport.request("me").ok
    assert proxy_server.requests == []
    assert [r.headers["Authorization"] for r in stub_server.requests] == [f"Bearer {key}"]


def test_the_proxy_extra_is_the_one_proxy_used(
    stub_server: StubServer, proxy_server: StubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    elsewhere = StubServer()
    try:
        _proxy_env(monkeypatch, elsewhere.url, tmp_path)
        with transport_for(stub_server.url, new_secret(), proxy=proxy_server.url) as transport:
            assert transport.request("me").ok
        assert elsewhere.requests == [] and stub_server.requests == []
        assert [r.path for r in proxy_server.requests] == [f"{stub_server.url}/v1/me"]
    finally:
        elsewhere.close()


def _httpx_clients(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr.endswith("Client")
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "httpx"
    ]


def test_every_httpx_client_in_the_package_ignores_the_environment() -> None:
    """Any client built later (a download, another API) must opt out of environment proxies too."""
    root = Path(airflow_provider_attentive.__file__).parent
    found: dict[str, bool] = {}
    for path in root.rglob("*.py"):
        if "emulator" in path.relative_to(root).parts:
            continue  # the emulator's own control client talks to the emulator and carries no key
        for call in _httpx_clients(ast.parse(path.read_text())):
            trust = [k.value for k in call.keywords if k.arg == "trust_env"]
            found[f"{path.name}:{call.lineno}"] = (
                len(trust) == 1 and isinstance(trust[0], ast.Constant) and trust[0].value is False
            )
    assert found, "no httpx client found: the test no longer looks in the right place"
    assert [where for where, ignores_env in found.items() if not ignores_env] == []


@pytest.mark.parametrize(
    ("proxy", "insecure", "match"),
    [
        ("http://u:{p}@proxy.corp:3128", False, "refusing the plain http:// proxy"),
        ("socks5://u:{p}@proxy.corp:1080", False, "must start with http:// or https://"),
        ("u:{p}@proxy.corp:3128", False, "must start with http:// or https://"),
        ("https://u:{p}@proxy.corp:99999", False, "does not parse"),
        ("https://u:{p}@proxy.corp:3128/some/path", False, "without a path"),
        ("https://u:{p}@:3128", False, "has no host"),
    ],
)
def test_a_bad_proxy_is_refused_without_showing_its_password(proxy: str, insecure: bool, match: str) -> None:
    password = new_secret()
    with pytest.raises(ValueError, match=match) as info:
        TransportConfig(
            "https://api.attentivemobile.com", "k", proxy=proxy.format(p=password), allow_insecure_http=insecure
        )
    assert leaked(password, str(info.value)) == set()


def test_accepted_proxies_and_their_secrets(caplog: pytest.LogCaptureFixture) -> None:
    password = new_secret()
    config = TransportConfig("https://api.attentivemobile.com", "k", proxy=f" https://u:{password}@proxy.corp:3128 ")
    assert config.proxy == f"https://u:{password}@proxy.corp:3128" and password not in repr(config)
    assert password in config.secret_values()
    assert TransportConfig("https://api.attentivemobile.com", "k", proxy="http://127.0.0.1:3128").proxy
    assert TransportConfig("https://api.attentivemobile.com", "k", proxy="  ").proxy is None
    with caplog.at_level(logging.WARNING):
        insecure = f"http://u:{password}@proxy.corp:3128"
        assert TransportConfig("https://api.attentivemobile.com", "k", proxy=insecure, allow_insecure_http=True).proxy
    assert "plain http:// proxy" in caplog.text and leaked(password, caplog.text) == set()


# -- 4. broken keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("odd", ["\u00e9", "\u200b", "\u00a0", " ", "\t", "\x00", "\x7f"])
def test_a_key_that_cannot_be_sent_is_refused_without_naming_any_of_it(odd: str) -> None:
    broken = new_secret()[:20] + odd + new_secret()
    with pytest.raises(ValueError, match="non-ASCII") as info:
        TransportConfig("https://api.attentivemobile.com", broken)
    message = str(info.value)
    assert (odd == " " or odd not in message) and "position" not in message  # a space is in any sentence
    assert leaked(broken, message) == set()


# -- 5. names checked by a pattern -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [{"schema": "public\n"}, {"table_prefix": "attentive_\n"}, {"table_prefix": "attentive\n"}, {"schema": "a.b"}],
)
def test_state_names_with_a_trailing_newline_are_refused(names: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(SyncConfigError):
        StateStore(sqlite3.connect(tmp_path / "s.db"), **names)


def test_a_rate_limit_table_with_a_trailing_newline_is_refused() -> None:
    def connect() -> Any:
        raise AssertionError("nothing is opened for an invalid table name")

    for table in ("attentive_rate_limit\n", "public.attentive_rate_limit\n"):
        with pytest.raises(ValueError, match="invalid rate-limit table name"):
            SqlRateLimiter(connect, base_url="https://x.example", api_key="k", rates={"me": 1}, table=table)
