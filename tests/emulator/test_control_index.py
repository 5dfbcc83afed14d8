"""The control index (``GET /_emulator/``, ``--help``), the apply-then-5xx fault, and v2 settings from the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_provider_attentive.emulator import Emulator, EmulatorError, FaultConfig, KeySpec
from airflow_provider_attentive.emulator.cli import main
from airflow_provider_attentive.emulator.control import CONTROL_ROUTES
from airflow_provider_attentive.emulator.endpoints import API_ROUTES
from tests.helpers.emulator import PHONE, error_message, finished_job, v2_client

SCRIPT = Path(sys.executable).with_name("attentive-emulator")
SUBSCRIBE = {"user": {"phone": PHONE}, "signUpSourceId": "64140"}


def test_the_index_lists_every_control_route_and_endpoint(attentive_emulator: Emulator) -> None:
    index = attentive_emulator.client.index()
    assert index["status"] == "ok" and index["url"] == attentive_emulator.url  # still a health answer
    listed = {(r["method"], r["path"]) for r in index["routes"]}
    assert listed == {(r.method, f"/_emulator{r.path}") for r in CONTROL_ROUTES}
    assert all(r["description"] for r in index["routes"])
    for path in ("/_emulator/jobs", "/_emulator/segments", "/_emulator/results", "/_emulator/requests"):
        assert ("GET", path) in listed
    assert ("POST", "/_emulator/jobs/release") in listed and ("POST", "/_emulator/jobs/settings") in listed
    api = {r["name"]: r for r in index["api"]}
    assert set(api) == set(API_ROUTES.names)
    assert api["bulk"]["scopes"] == ["attributes:write", "subscriptions:write"] and api["bulk_job"]["scopes"] == []
    assert api["segment_read"]["path"] == "/v2/segments/external/{externalId}"
    # Every listed inspection route without a parameter answers.
    with httpx.Client(base_url=f"{attentive_emulator.url}/_emulator") as control:
        for route in CONTROL_ROUTES:
            if route.method == "GET" and "{" not in route.path:
                assert control.get(route.path).status_code == 200, route.path
        unknown = control.get("/bogus")
    assert unknown.status_code == 404 and "GET /_emulator/ lists them" in error_message(unknown)


def test_help_lists_inspection_routes_and_v2_endpoints() -> None:
    assert SCRIPT.exists(), f"console script not installed at {SCRIPT}"
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    for route in CONTROL_ROUTES:
        assert f"/_emulator{route.path}" in result.stdout
    for path in ("/v2/bulk/user/attributes", "/v2/bulk/job/{bulkJobId}", "/v2/segments/external/{externalId}"):
        assert path in result.stdout
    for flag in ("--hold-jobs", "--job-delay-s", "--job-fail-rate", "--results-garble-rate", "--apply-then-5xx-rate"):
        assert flag in result.stdout


def test_apply_then_5xx_records_the_subscription_and_answers_504(attentive_emulator: Emulator) -> None:
    client = attentive_emulator.client
    client.set_faults(apply_then_5xx_rate=1.0, endpoints=["subscribe"])
    headers = {"Authorization": "Bearer test-key"}
    url = f"{attentive_emulator.url}/v1/subscriptions"
    response = httpx.post(url, json=SUBSCRIBE, headers=headers)
    assert response.status_code == 504
    assert "injected" in error_message(response) and "x-ratelimit-remaining" in response.headers
    assert client.subscriptions()[PHONE]["MARKETING"]["subscribed"] is True
    [entry] = client.requests(endpoint="subscribe")
    assert (entry["status"], entry["answered"], entry["fault"]) == (202, 504, "apply_then_5xx")
    stats = client.stats()["endpoints"]["subscribe"]
    assert stats["faults"]["apply_then_5xx"] == 1 and stats["status"] == {"504": 1}
    # Sending it again is what the fault exists to catch: Attentive texts the person a second time.
    client.set_faults()
    again = httpx.post(url, json=SUBSCRIBE, headers=headers)
    assert again.json()["subscriptionResponses"][0]["subscriptionCreationStatus"] == "PREVIOUSLY_CREATED"
    assert client.stats()["repeat_subscribes"] == 1


def test_apply_then_5xx_is_validated_with_the_other_rates(attentive_emulator: Emulator) -> None:
    with pytest.raises(EmulatorError, match="sum"):
        attentive_emulator.client.set_faults(apply_then_5xx_rate=0.6, error_rate=0.6)
    with pytest.raises(ValueError, match="apply_then_5xx_rate"):
        FaultConfig.from_mapping({"apply_then_5xx_rate": 1.5})
    assert FaultConfig(apply_then_5xx_rate=0.1).active


def test_job_settings_and_v2_access_from_the_command_line() -> None:
    keys = {"cli-v2-key": KeySpec(), "cli-v1-key": KeySpec(v2_access=False)}
    args = ["--hold-jobs", "--job-delay-s", "0", "--job-fail-rate", "0", "--results-drop-rate", "0.5"]
    with Emulator.spawn(keys=keys, extra_args=args) as running:
        settings = running.client.job_settings()
        assert settings["hold"] is True and settings["delay_s"] == 0 and settings["drop_line_rate"] == 0.5
        with v2_client(running.url, "cli-v1-key") as v1_only:
            assert v1_only.get("/segments").status_code == 404
        with v2_client(running.url, "cli-v2-key") as v2:
            submitted = v2.post("/bulk/user/attributes", json={"users": [{"identifiers": {"phone": PHONE}}]})
            job_id = submitted.json()["batchJobId"]
            assert v2.get(f"/bulk/job/{job_id}").json()["status"] == "IN_PROGRESS"
            assert running.client.release_jobs() == [job_id]
            assert finished_job(v2, job_id)["status"] == "COMPLETED"
        # Reset restores the settings the process started with.
        running.client.reset()
        assert running.client.job_settings()["hold"] is True


def test_bad_job_flags_fail_fast(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--job-fail-rate", "2", "--port", "0"])
    assert exit_info.value.code == 2
    assert "fail_rate" in capsys.readouterr().err
