"""The Airflow UI in a real browser: the Attentive connection form, the Test button, and a finished sync.

One module-wide stack on loopback, all against a throwaway AIRFLOW_HOME (SQLite metadata DB):

* ``airflow api-server`` with ``[core] test_connection = Enabled`` and the simple auth manager's
  "everyone is admin" switch, so the browser needs no login;
* the Attentive emulator, as a subprocess the api-server can reach (the Test button runs the hook *in the
  api-server process*);
* Debian's Chromium, headless, driven through Debian's chromedriver with selenium (nothing is downloaded);
* for the last test only, ``airflow scheduler`` and ``airflow dag-processor`` (LocalExecutor) so that an
  example DAG really runs and its log, XCom and asset event can be looked at like a user would.

The tests form one scenario, in file order: look at the form, save a connection, test it (good key, then a
wrong one), then run a sync. Screenshots go to ``test-artifacts/ui/`` on every run (one more at the end of
every test, pass or fail); with ATTENTIVE_UPDATE_DOCS_SCREENSHOTS=1 the form and a successful Test are copied to ``docs/``.

Without ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (``scripts/ensure-packages.sh browser`` installs them) the
module is skipped, unless ``ATTENTIVE_REQUIRE_BROWSER=1`` (set it in CI), in which case it fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, EmulatorProcess, KeySpec
from airflow_provider_attentive.get_provider_info import DEFAULT_BASE_URL

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
ARTIFACTS = ROOT / "test-artifacts" / "ui"
DOCS = ROOT / "docs"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,960",
    "--lang=en-US",
]

CONN_ID = "attentive_ui"
GOOD_KEY = "ui-test-key-7f3a9c41"  # distinctive, so finding it anywhere on a page is never a coincidence
WRONG_KEY = "wrong-key-0d5e8b27"
COMPANY = "UI Test Co"
UPSTREAM_DAG = "attentive_vip_sms_list"
UPSTREAM_TASK = "vip_sms_list"
DOWNSTREAM_DAG = "attentive_ui_after_vip_sync"
SUMMARY_ROWS = (
    "read",
    "unchanged",
    "added",
    "changed",
    "removed",
    "invalid",
    "rejected",
    "in doubt",
    "requests",
    "throttled",
    "duration",
)

pytestmark = pytest.mark.ui

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as exc:  # reported by the `stack` fixture: skipped locally, a failure in CI
    SELENIUM_MISSING: str | None = f"selenium is not installed (dev dependency group): {exc}"
else:
    SELENIUM_MISSING = None


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("ATTENTIVE_REQUIRE_BROWSER", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (ATTENTIVE_REQUIRE_BROWSER is set)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"<{path} unreadable>"


def _load_module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wait_until(what: str, check: Callable[[], Any], timeout: float, *, interval: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, ValueError) as exc:  # server not up yet, half-written JSON, ...
            last_error, result = exc, None
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})")


def _airflow_rejects_test_of_portless_connections() -> bool:
    """True on Airflow versions whose Test button cannot test a saved connection that has no port.

    The UI posts ``port: Number(connection.port)``, i.e. ``0`` for a connection without a port, and
    ``POST /api/v2/connections/test`` then takes ``0`` for "a different destination than the stored one" and
    refuses the masked password with 400 Bad Request. Fixed upstream by apache/airflow#73298 (after 3.3.2).
    """
    from airflow.api_fastapi.core_api.routes.public import connections as routes

    same_endpoint = getattr(routes, "_same_endpoint", None)
    return same_endpoint is not None and not same_endpoint(0, None)


class Api:
    """A tiny JSON client for the api-server's public REST API (no auth needed: all users are admins)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def get(self, path: str) -> Any:
        return self.request("GET", path)


@dataclass
class Stack:
    home: Path
    base_url: str
    api: Api
    env: dict[str, str]
    emulator: EmulatorProcess
    api_server_log: Path


def _stop(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM the process group we started (the api-server forks workers), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[Any]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def _downstream_dag(asset_name: str, asset_uri: str) -> str:
    """A consumer DAG as a user would write it: scheduled on the sync's asset, reading the event's counts."""
    return textwrap.dedent(
        f'''\
        """Scheduled on a completed Attentive sync; returns the counts carried by the asset event."""
        import datetime as dt

        from airflow.sdk import DAG, Asset, task

        with DAG(
            dag_id={DOWNSTREAM_DAG!r},
            schedule=[Asset(name={asset_name!r}, uri={asset_uri!r})],
            start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
            catchup=False,
        ):

            @task
            def sync_counts(**context):
                events = context["triggering_asset_events"]
                return [event.extra for asset_events in events.values() for event in asset_events]

            sync_counts()
        '''
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _require(SELENIUM_MISSING is None, SELENIUM_MISSING or "")
    _require(
        os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK),
        f"{CHROMIUM} or {CHROMEDRIVER} is missing; run scripts/ensure-packages.sh browser",
    )
    home = tmp_path_factory.mktemp("ui-airflow")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "dags" / "attentive_subscriptions.py", dags / "attentive_subscriptions.py")
    upstream = _load_module(dags / "attentive_subscriptions.py", "attentive_ui_upstream_dag")
    asset = upstream.dag.get_task(UPSTREAM_TASK).asset
    (dags / "after_vip_sync.py").write_text(_downstream_dag(asset.name, asset.uri))
    warehouse = home / "warehouse.db"
    _load_module(ROOT / "scripts" / "demo.py", "attentive_ui_demo").build_warehouse(warehouse)

    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    api_server_log = home / "api-server.log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as cleanup:
        emulator = cleanup.enter_context(
            Emulator.spawn(keys={GOOD_KEY: KeySpec(scopes=ALL_SCOPES, company_name=COMPANY)})
        )
        env = dict(os.environ)
        env.update(
            AIRFLOW_HOME=str(home / "airflow"),
            AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__UNIT_TEST_MODE="False",
            AIRFLOW__CORE__TEST_CONNECTION="Enabled",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM="2",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{base_url}/execution/",
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(_free_port()),
            AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            # What the example DAG uses; the connection made through the UI is a separate one (CONN_ID).
            AIRFLOW_CONN_ATTENTIVE_DEFAULT=json.dumps(
                {"conn_type": "attentive", "host": emulator.url, "password": GOOD_KEY}
            ),
            AIRFLOW_CONN_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
        )
        migrate = subprocess.run(
            [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=180, check=False
        )
        assert migrate.returncode == 0, f"airflow db migrate failed:\n{(migrate.stdout + migrate.stderr)[-4000:]}"

        server = _start(
            [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], env, api_server_log
        )
        cleanup.callback(_stop, server)
        api = Api(base_url)

        def up() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"api-server exited with {server.returncode}:\n{_tail(api_server_log)}")
            return api.get("/api/v2/version").get("version") is not None

        _wait_until("the api-server to answer /api/v2/version", up, timeout=120)
        yield Stack(home, base_url, api, env, emulator, api_server_log)


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=stack.home)}"]:
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(stack.home / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def _screenshot_at_end(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test leaves ``<test name>-end.png`` behind, which is what you want to look at when one fails."""
    yield
    if "browser" in request.fixturenames:
        driver = request.getfixturevalue("browser")
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(ARTIFACTS / f"{request.node.name}-end.png"))


# -- page helpers ------------------------------------------------------------------------------------------------


def wait(driver: Any, timeout: float = 20) -> WebDriverWait:
    return WebDriverWait(driver, timeout, poll_frequency=0.1)


def shot(driver: Any, name: str, element: WebElement | None = None, *, docs: str | None = None) -> Path:
    path = ARTIFACTS / f"{name}.png"
    if element is not None:
        element.screenshot(str(path))
    else:
        driver.save_screenshot(str(path))
    # The README's screenshots are refreshed only on request, so a test run never dirties the work tree.
    if docs and os.environ.get("ATTENTIVE_UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / docs)
    return path


def open_connections(driver: Any, stack: Stack) -> None:
    driver.get(f"{stack.base_url}/connections")
    wait(driver, 60).until(EC.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Add Connection']")))


def dialog(driver: Any) -> WebElement:
    return wait(driver).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))


def close_dialog(driver: Any) -> None:
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    wait(driver).until(EC.invisibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))


def button(scope: WebElement, text: str) -> WebElement:
    return scope.find_element(By.XPATH, f".//button[normalize-space()={text!r}]")


def expand(scope: WebElement, section: str) -> None:
    """Open one accordion section of the connection form (opening one closes the others)."""
    trigger = button(scope, section)
    if trigger.get_attribute("aria-expanded") != "true":
        trigger.click()
    WebDriverWait(scope, 10, poll_frequency=0.1).until(
        lambda _: button(scope, section).get_attribute("aria-expanded") == "true"
    )


def labels(scope: WebElement) -> list[str]:
    return [label.text.strip() for label in scope.find_elements(By.TAG_NAME, "label") if label.text.strip()]


def field(driver: Any, scope: WebElement, label: str) -> WebElement:
    """The input a visible ``<label>`` is associated with (``for`` -> ``id``), so the label is really its label."""
    element = scope.find_element(By.XPATH, f".//label[normalize-space()={label!r}]")
    target = element.get_attribute("for")
    assert target, f"label {label!r} is not associated with an input"
    return driver.find_element(By.ID, target)


def help_text(driver: Any, element: WebElement) -> str:
    described_by = element.get_attribute("aria-describedby") or ""
    return " ".join(driver.find_element(By.ID, ref).text for ref in described_by.split() if ref)


def choose_connection_type(driver: Any, form: WebElement, name: str) -> None:
    combo = form.find_element(By.CSS_SELECTOR, "input[role=combobox]")
    combo.send_keys(name)
    option = wait(driver).until(
        EC.element_to_be_clickable((By.XPATH, f"//*[@role='option' and normalize-space()={name!r}]"))
    )
    option.click()
    wait(driver).until(lambda _: button(form, "Standard Fields"))


def type_into(element: WebElement, text: str) -> None:
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def save(driver: Any, form: WebElement) -> None:
    save_button = button(form, "Save")
    wait(driver).until(lambda _: save_button.is_enabled())
    save_button.click()
    wait(driver).until(EC.invisibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))


def row_button(driver: Any, conn_id: str, label: str) -> WebElement:
    return wait(driver).until(
        EC.element_to_be_clickable(
            (By.XPATH, f"//tr[td[normalize-space()={conn_id!r}]]//button[@aria-label={label!r}]")
        )
    )


def press_test(driver: Any, conn_id: str) -> WebElement:
    """Press the row's Test button and return the toast that reports the outcome."""
    row_button(driver, conn_id, "Test Connection").click()
    toast = wait(driver, 60).until(
        EC.visibility_of_element_located(
            (By.CSS_SELECTOR, "[data-scope=toast][data-part=root][data-state=open] [data-part=description]")
        )
    )
    root = toast.find_element(By.XPATH, "ancestor::*[@data-part='root'][1]")
    # Toasts close after a few seconds; hovering pauses them so the screenshot shows the message.
    with contextlib.suppress(Exception):
        ActionChains(driver).move_to_element(root).perform()
    return root


def me_requests(emulator: EmulatorProcess) -> int:
    return int(emulator.client.stats()["endpoints"]["me"]["requests"])


def assert_no_key_in(text: str, where: str) -> None:
    for key in (GOOD_KEY, WRONG_KEY):
        assert key not in text, f"an API key appears in {where}"


# -- the scenario ------------------------------------------------------------------------------------------------


def test_add_connection_form_shows_only_what_attentive_needs(stack: Stack, browser: Any) -> None:
    open_connections(browser, stack)
    button(browser.find_element(By.TAG_NAME, "body"), "Add Connection").click()
    form = dialog(browser)
    choose_connection_type(browser, form, "Attentive")

    visible = labels(form)
    for absent in ("Login", "Schema", "Port", "Password", "Host"):
        assert absent not in visible, f"{absent!r} should not be on the Attentive form: {visible}"
    for name in ("login", "schema", "port"):
        assert not form.find_elements(By.NAME, name), f"an input named {name!r} is on the form"

    api_key = field(browser, form, "API key")
    assert api_key.get_attribute("name") == "password"
    assert api_key.get_attribute("type") == "password", "the API key must be a masked (password) input"
    base_url = field(browser, form, "Base URL")
    assert base_url.get_attribute("name") == "host"
    assert DEFAULT_BASE_URL in (base_url.get_attribute("placeholder") or "") + (base_url.get_attribute("value") or "")

    # What the docs show: a named connection with a key typed in (masked) and the default base URL.
    form.find_element(By.NAME, "connection_id").send_keys("attentive_default")
    api_key.send_keys(GOOD_KEY)
    shot(browser, "a1-form-standard-fields", form, docs="connection-form.png")

    expand(form, "Extra Fields")
    expected_help = {
        "Attributes requests/s": "150 requests/s",
        "Events requests/s": "150 requests/s",
        "Subscribe requests/s": "10 requests/s",
        "Unsubscribe requests/s": "5 requests/s",
        "Identity requests/s": "10 requests/s",
        "Other endpoints requests/s": "150 requests/s",
        "Request timeout (s)": "Default 30",
        "Max attempts": "Default 6",
        "Max concurrent requests": "Default 64",
    }
    for label, hint in expected_help.items():
        element = field(browser, form, label)
        assert element.get_attribute("value") == "", f"{label!r} should start empty (the hook's default applies)"
        assert element.get_attribute("data-required") is None and element.get_attribute("required") is None, (
            f"{label!r} is optional but the form marks it required"
        )
        assert hint in help_text(browser, element), f"{label!r} lacks its help text ({hint!r})"
    shot(browser, "a2-form-extra-fields", form, docs="connection-form-extra-fields.png")
    close_dialog(browser)


def test_saved_connection_keeps_its_values_and_masks_the_key(stack: Stack, browser: Any) -> None:
    open_connections(browser, stack)
    button(browser.find_element(By.TAG_NAME, "body"), "Add Connection").click()
    form = dialog(browser)
    form.find_element(By.NAME, "connection_id").send_keys(CONN_ID)
    choose_connection_type(browser, form, "Attentive")
    field(browser, form, "Base URL").send_keys(stack.emulator.url)
    field(browser, form, "API key").send_keys(GOOD_KEY)
    expand(form, "Extra Fields")
    subscribe_rate = field(browser, form, "Subscribe requests/s")
    subscribe_rate.send_keys("7.5")
    subscribe_rate.send_keys(Keys.TAB)
    shot(browser, "b1-form-filled", form)
    save(browser, form)

    row_button(browser, CONN_ID, "Edit Connection").click()
    form = dialog(browser)
    wait(browser).until(lambda _: field(browser, form, "Base URL").get_attribute("value"))
    assert form.find_element(By.NAME, "connection_id").get_attribute("value") == CONN_ID
    assert field(browser, form, "Base URL").get_attribute("value") == stack.emulator.url
    api_key = field(browser, form, "API key")
    assert api_key.get_attribute("type") == "password"
    assert api_key.get_attribute("value") == "***", "the saved key should come back redacted"
    shot(browser, "b2-reopened-standard-fields", form)
    expand(form, "Extra Fields")
    assert field(browser, form, "Subscribe requests/s").get_attribute("value") == "7.5"
    assert field(browser, form, "Events requests/s").get_attribute("value") == ""
    shot(browser, "b3-reopened-extra-fields", form)
    assert_no_key_in(browser.page_source, "the Edit Connection page")
    close_dialog(browser)

    stored = stack.api.get(f"/api/v2/connections/{CONN_ID}")
    assert stored["conn_type"] == "attentive" and stored["host"] == stack.emulator.url
    assert stored["password"] == "***" and stored["port"] is None
    assert json.loads(stored["extra"])["rate_limit_subscribe"] == 7.5


def test_test_button_on_a_connection_without_port(stack: Stack, browser: Any) -> None:
    """The form hides the port, so a connection saved through it has none: what does Test do with that?"""
    open_connections(browser, stack)
    before = me_requests(stack.emulator)
    toast = press_test(browser, CONN_ID)
    if _airflow_rejects_test_of_portless_connections():
        # Airflow 3.3.2 (apache/airflow#73298): refused before the hook runs; the README documents the workaround.
        shot(browser, "c1-test-without-port-airflow-bug")
        assert "Test Connection Failed" in toast.text and "Bad Request" in toast.text, toast.text
        assert me_requests(stack.emulator) == before, "the request should not have reached Attentive"
    else:
        shot(browser, "c1-test-without-port", docs="connection-test-success.png")
        assert "Test Connection Successful" in toast.text and f"Connected to {COMPANY}" in toast.text, toast.text
        assert me_requests(stack.emulator) == before + 1


def test_test_button_reports_success_with_the_company_name(stack: Stack, browser: Any) -> None:
    if _airflow_rejects_test_of_portless_connections():
        # The documented workaround for Airflow 3.3.2: give the connection a port (443 for the real API) with
        # the CLI or REST API. The hidden port survives later edits in the form (checked in the next test).
        port = urllib.parse.urlsplit(stack.emulator.url).port
        stack.api.request(
            "PATCH",
            f"/api/v2/connections/{CONN_ID}?update_mask=port",
            {"connection_id": CONN_ID, "conn_type": "attentive", "port": port},
        )
    open_connections(browser, stack)
    before = me_requests(stack.emulator)
    toast = press_test(browser, CONN_ID)
    shot(browser, "c2-test-success", docs="connection-test-success.png")
    assert "Test Connection Successful" in toast.text, toast.text
    assert f"Connected to {COMPANY}" in toast.text, toast.text
    assert me_requests(stack.emulator) == before + 1, "the api-server should have called GET /v1/me once"
    assert_no_key_in(browser.page_source, "the Connections page")


def test_test_button_reports_a_wrong_key_without_showing_it(stack: Stack, browser: Any) -> None:
    open_connections(browser, stack)
    row_button(browser, CONN_ID, "Edit Connection").click()
    form = dialog(browser)
    wait(browser).until(lambda _: field(browser, form, "Base URL").get_attribute("value"))
    type_into(field(browser, form, "API key"), WRONG_KEY)
    save(browser, form)

    open_connections(browser, stack)  # a fresh page: no toast left over from saving
    before = me_requests(stack.emulator)
    toast = press_test(browser, CONN_ID)
    shot(browser, "d1-test-wrong-key")
    assert "Test Connection Failed" in toast.text, toast.text
    assert "401" in toast.text and "API key" in toast.text, toast.text
    assert me_requests(stack.emulator) == before + 1, "the wrong key should have been tried against Attentive"
    assert_no_key_in(browser.page_source, "the page after a failed Test")
    assert_no_key_in(_tail(stack.api_server_log, 10**7), "the api-server log")


@pytest.fixture(scope="module")
def scheduled_run(stack: Stack) -> Iterator[dict[str, Any]]:
    """Start a scheduler and a dag-processor; wait for the example DAG's first (scheduled) run to finish."""
    with contextlib.ExitStack() as cleanup:
        for component in ("dag-processor", "scheduler"):
            proc = _start([AIRFLOW, component], stack.env, stack.home / f"{component}.log")
            cleanup.callback(_stop, proc)

        def finished() -> dict[str, Any] | None:
            runs = stack.api.get(f"/api/v2/dags/{UPSTREAM_DAG}/dagRuns")["dag_runs"]
            done = [run for run in runs if run["state"] in ("success", "failed")]
            return done[0] if done else None

        run = _wait_until(f"a finished run of {UPSTREAM_DAG}", finished, timeout=150, interval=1)
        if run["state"] != "success":
            pytest.fail(f"{UPSTREAM_DAG} failed:\n{_tail(stack.home / 'scheduler.log')}", pytrace=False)

        def downstream_finished() -> dict[str, Any] | None:
            with contextlib.suppress(urllib.error.HTTPError):  # 404 until the dag-processor has parsed it
                runs = stack.api.get(f"/api/v2/dags/{DOWNSTREAM_DAG}/dagRuns")["dag_runs"]
                done = [r for r in runs if r["state"] in ("success", "failed")]
                return done[0] if done else None
            return None

        downstream = _wait_until(f"{DOWNSTREAM_DAG} to run on the asset event", downstream_finished, timeout=90)
        yield {"run": run, "downstream": downstream}


def _task_path(dag_id: str, run_id: str, task_id: str) -> str:
    return f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"


def test_finished_sync_is_visible_in_log_xcom_and_asset_event(
    stack: Stack, browser: Any, scheduled_run: dict[str, Any]
) -> None:
    run_id = scheduled_run["run"]["dag_run_id"]
    task = "/api/v2" + _task_path(UPSTREAM_DAG, run_id, UPSTREAM_TASK)

    # The task log (what the Logs tab shows) ends with the summary table.
    events = stack.api.get(f"{task}/logs/1?full_content=true")["content"]
    messages = [e.get("event", "") for e in events if isinstance(e, dict)]
    found = [i for i, m in enumerate(messages) if "Attentive sync summary" in m]
    assert found, f"no summary table in the task log:\n{json.dumps(events, indent=1)[-4000:]}"
    summary_at = found[-1]
    table = messages[summary_at]
    for row in SUMMARY_ROWS:
        assert f"| {row} " in table, f"summary table lacks {row!r}:\n{table}"
    operator_messages = [
        i for i, e in enumerate(events) if isinstance(e, dict) and "operators" in str(e.get("logger", ""))
    ]
    assert operator_messages and operator_messages[-1] == summary_at, "the summary is not the operator's last log line"

    # The XCom `summary` is JSON with the counts.
    summary = stack.api.get(f"{task}/xcomEntries/summary")["value"]
    assert isinstance(summary, dict), summary
    assert summary["rows_read"] == 40 and summary["succeeded"]["added"] == 40, summary
    assert summary["failed"] == {"added": 0, "changed": 0, "removed": 0}, summary
    assert stack.api.get(f"{task}/xcomEntries/return_value")["value"] == summary

    # The asset event carries the counts, and a DAG scheduled on the asset ran and received them.
    uri = "attentive://subscriptions/vip_sms_list"  # the example DAG names its sync_id explicitly
    asset_events = stack.api.get(f"/api/v2/assets/events?source_dag_id={UPSTREAM_DAG}")["asset_events"]
    event = next(e for e in asset_events if e["source_run_id"] == run_id)
    assert event["uri"] == uri, event
    assert event["extra"]["rows_read"] == 40 and event["extra"]["succeeded"]["added"] == 40, event
    downstream = scheduled_run["downstream"]
    assert downstream["state"] == "success", downstream
    received = stack.api.get(
        "/api/v2" + _task_path(DOWNSTREAM_DAG, downstream["dag_run_id"], "sync_counts") + "/xcomEntries/return_value"
    )["value"]
    assert [e["rows_read"] for e in received] == [40], received

    # And in the browser: the task's Logs tab shows the table; the run's XCom and the asset page exist.
    page = f"{stack.base_url}/dags/{UPSTREAM_DAG}/runs/{urllib.parse.quote(run_id, safe='')}/tasks/{UPSTREAM_TASK}"
    browser.get(page)
    try:
        wait(browser, 60).until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "Attentive sync summary"))
    except TimeoutException:
        shot(browser, "e1-task-log")
        raise
    shot(browser, "e1-task-log")
    browser.get(f"{page}/xcom")
    wait(browser, 30).until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "summary"))
    shot(browser, "e2-task-xcom")
    browser.get(f"{stack.base_url}/dags/{DOWNSTREAM_DAG}")
    wait(browser, 30).until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), DOWNSTREAM_DAG))
    shot(browser, "e3-downstream-dag")
