"""The client package as a whole: no Airflow anywhere in it, a light config module, its public names."""

from __future__ import annotations

import inspect
import pkgutil
import subprocess
import sys

import airflow_provider_attentive.client as client


def _client_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(client.__path__, prefix=f"{client.__name__}.")]


def test_client_modules_do_not_import_airflow() -> None:
    modules = _client_modules()
    assert {"airflow_provider_attentive.client.transport", "airflow_provider_attentive.client.ratelimit.sql"} <= set(
        modules
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_provider_info_reads_the_base_url_without_loading_httpx() -> None:
    # Airflow's provider manager imports get_provider_info whenever it lists providers.
    code = (
        "import sys\n"
        "from airflow_provider_attentive.get_provider_info import get_provider_info\n"
        "from airflow_provider_attentive.client.config import DEFAULT_BASE_URL\n"
        "get_provider_info()\n"
        "print(DEFAULT_BASE_URL, 'httpx' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["https://api.attentivemobile.com", "False"]


def test_every_public_name_resolves() -> None:
    for name in client.__all__:
        value = getattr(client, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith(f"{client.__name__}."), (name, value.__module__)
    assert set(client.__all__) <= set(dir(client))
