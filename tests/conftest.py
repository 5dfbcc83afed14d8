"""Root test configuration shared by all test packages.

Airflow reads AIRFLOW_HOME and friends when it is first imported, so they are set here, before any
test module imports it. ``setdefault`` lets a developer or CI point them elsewhere.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="attentive-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")

# Emulator fixtures: attentive_emulator_server (session), attentive_emulator (reset per test); PostgreSQL
# fixtures: postgres_server (session), pg_database (a fresh database per test).
pytest_plugins = ["airflow_provider_attentive.emulator.pytest_plugin", "tests.helpers.postgres"]
