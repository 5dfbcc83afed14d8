"""Packaging and deployment files: provider registration, docker-compose stack, Dockerfile."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_provider_entry_point_and_metadata() -> None:
    dist = distribution("airflow-provider-attentive")
    (entry,) = [e for e in dist.entry_points if e.group == "apache_airflow_provider"]
    info = entry.load()()
    assert info["package-name"] == dist.metadata["Name"] == "airflow-provider-attentive"
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "attentive"
    assert conn["hook-class-name"] == "airflow_provider_attentive.hooks.attentive.AttentiveHook"
    assert set(conn["ui-field-behaviour"]["hidden-fields"]) == {"port", "login", "schema"}
    assert conn["ui-field-behaviour"]["relabeling"] == {"password": "API key", "host": "Base URL"}
    for name, field in conn["conn-fields"].items():
        assert "null" in field["schema"]["type"], f"{name} must be optional (nullable) in the React form"
    assert (ROOT / "airflow_provider_attentive" / "py.typed").exists()


def test_test_tools_are_not_runtime_dependencies() -> None:
    requires = distribution("airflow-provider-attentive").requires or []
    runtime = [r for r in requires if "extra ==" not in r]
    for tool in ("pytest", "hypothesis", "ruff", "selenium", "jsonschema"):
        assert not [r for r in runtime if r.lower().startswith(tool)], f"{tool} must not be a runtime dependency"


def test_airflow_lists_the_provider(tmp_path: Path) -> None:
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "providers", "list", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert any(p["package_name"] == "airflow-provider-attentive" for p in json.loads(out[out.index("[") :]))


@pytest.fixture(scope="module")
def compose() -> dict:
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is missing: run scripts/ensure-packages.sh compose")
    proc = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "config"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_compose_stack_has_celery_airflow_and_demo_services(compose: dict) -> None:
    services = compose["services"]
    airflow = {
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker-1",
        "airflow-worker-2",
        "airflow-init",
    }
    assert airflow | {"postgres", "redis", "warehouse", "attentive-emulator"} <= set(services)
    for name in airflow:
        service = services[name]
        assert service["build"]["context"] == str(ROOT), f"{name} must build the provider image from the repo"
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env
        conn = json.loads(env["AIRFLOW_CONN_ATTENTIVE_DEFAULT"])
        assert conn["extra"]["rate_limit_backend"] == "redis"
        assert json.loads(env["AIRFLOW_CONN_WAREHOUSE"])["conn_type"] == "postgres"
        mounts = [str(v) for v in service.get("volumes", [])]
        assert any(f"{ROOT / 'dags'}:/opt/airflow/dags" in m for m in mounts), f"{name} must mount the example DAGs"
    assert services["airflow-worker-1"]["command"] == services["airflow-worker-2"]["command"] == "celery worker"


def test_dockerfile_extends_the_official_image_and_installs_the_repo() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM apache/airflow:${AIRFLOW_VERSION}" in text and "ARG AIRFLOW_VERSION=3.3" in text
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in text and "/opt/airflow-provider-attentive" in text
