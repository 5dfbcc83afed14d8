"""A task that defers to AttentiveBulkJobTrigger under real Airflow (`airflow dags test`, which runs triggers)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from airflow_provider_attentive.emulator import ALL_SCOPES, Emulator, KeySpec
from tests.helpers.airflow_cli import airflow, airflow_env, attentive_conn

pytestmark = pytest.mark.slow

KEY = "sk_deferral_key_5521"

DAG_FILE = textwrap.dedent(
    '''
    """Submits one bulk job, defers until it is finished, and writes the trigger's event to EVENT_FILE."""

    import json
    import os
    import time
    from pathlib import Path

    from airflow.sdk import DAG, BaseOperator

    from airflow_provider_attentive.hooks.attentive import AttentiveHook
    from airflow_provider_attentive.triggers.bulk_job import AttentiveBulkJobTrigger


    class SubmitAndWait(BaseOperator):
        def execute(self, context):
            users = [{"identifiers": {"phone": "+14155550188"}, "attributes": {"custom": {"tier": "gold"}}}]
            result = AttentiveHook().get_conn().request("bulk", {"users": users})
            assert result.status == 202, result.error
            trigger = AttentiveBulkJobTrigger(
                job_ids=[result.body["batchJobId"]], deadline=time.time() + 120, poll_interval=0.2
            )
            self.defer(trigger=trigger, method_name="resume")

        def resume(self, context, event):
            Path(os.environ["EVENT_FILE"]).write_text(json.dumps(event))
            if event["status"] != "done":
                raise RuntimeError(event["message"])


    with DAG("attentive_bulk_deferral", schedule=None):
        SubmitAndWait(task_id="submit_and_wait")
    '''
)


def test_a_deferred_task_resumes_with_the_jobs_statuses(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "bulk_deferral.py").write_text(DAG_FILE)
    event_file = tmp_path / "event.json"
    with Emulator.spawn(keys={KEY: KeySpec(scopes=ALL_SCOPES)}) as emu:
        emu.client.set_job_settings(pending_s=0.1, delay_s=1.0)
        connections = {"attentive_default": attentive_conn(emu.url, KEY)}
        env = airflow_env(tmp_path / "airflow", dags, connections, EVENT_FILE=str(event_file))
        airflow(env, "db", "migrate")
        output = airflow(env, "dags", "test", "attentive_bulk_deferral")
        polls = [r for r in emu.client.requests() if r["path"].startswith("/v2/bulk/job/")]
    event = json.loads(event_file.read_text())
    assert event["status"] == "done", event
    (job,) = event["jobs"].values()
    assert job["status"] == "COMPLETED" and job["finished"] and job["results_available"]
    assert len(polls) >= 2  # it waited in the trigger, polling, rather than finding the job done at once
    assert KEY not in output and KEY not in event_file.read_text()
