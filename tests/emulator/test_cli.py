"""The emulator as a separate process: console script, ``python -m`` and ``Emulator.spawn``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_provider_attentive.emulator import Emulator, KeySpec

SCRIPT = Path(sys.executable).with_name("attentive-emulator")


def _start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    # Keys must come from argv here, not from a stray environment variable.
    env = {k: v for k, v in os.environ.items() if k != "ATTENTIVE_EMULATOR_KEYS"}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert match, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
    assert match.group(1) != "0"
    return proc, match.group(0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_console_script_serves_and_stops_on_signal(sig: signal.Signals) -> None:
    assert SCRIPT.exists(), f"console script not installed at {SCRIPT}"
    proc, url = _start(
        [
            str(SCRIPT),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--key",
            "cli-key-1234:events:write",
            "--company-name",
            "Demo Co",
            "--latency-ms",
            "0",
        ]
    )
    try:
        headers = {"Authorization": "Bearer cli-key-1234"}
        me = httpx.get(f"{url}/v1/me", headers=headers, timeout=5)
        assert me.status_code == 200
        assert me.json()["companyName"] == "Demo Co"
        event = {"type": "t", "user": {"email": "a@example.com"}}
        assert httpx.post(f"{url}/v1/events/custom", json=event, headers=headers).status_code == 200
        attrs = {"properties": {}, "user": {"email": "a@example.com"}}
        assert httpx.post(f"{url}/v1/attributes/custom", json=attrs, headers=headers).status_code == 403
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        _, stderr = proc.communicate(timeout=5)
        assert "cli-key-1234" not in stderr  # keys are masked in output
        assert "****1234" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_spawn_helper_runs_python_m_and_stops_cleanly() -> None:
    keys = {"spawned-key": KeySpec(scopes=["attributes:write"], company_name="Spawned Co")}
    with Emulator.spawn(keys=keys, extra_args=["--limit", "attributes=2"]) as running:
        headers = {"Authorization": "Bearer spawned-key"}
        assert httpx.get(f"{running.url}/v1/me", headers=headers).json()["companyName"] == "Spawned Co"
        body = {"properties": {"a": 1}, "user": {"phone": "+14155550100"}}
        codes = [
            httpx.post(f"{running.url}/v1/attributes/custom", json=body, headers=headers).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        assert running.client.attributes() == {"+14155550100": {"a": 1}}
        assert "spawned-key" not in " ".join(running.process.args)  # type: ignore[arg-type]
        process = running.process
    assert process.returncode == 0


def test_bad_cli_arguments_fail_fast() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_attentive.emulator", "--limit", "bogus=1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown endpoint" in result.stderr


def test_emulator_import_stands_apart_from_product_code() -> None:
    # The emulator must start fast and never pull in Airflow or the hook/sync packages.
    code = (
        "import sys, airflow_provider_attentive.emulator as e, airflow_provider_attentive.emulator.cli;"
        "from airflow_provider_attentive.emulator import EmulatorClient, ALL_SCOPES;"
        "bad = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.') or "
        "(m.startswith('airflow_provider_attentive.') and not m.startswith('airflow_provider_attentive.emulator')));"
        "print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
