"""Example: an SMS list that mirrors a SQL audience (subscribe who enters, unsubscribe who leaves).

Attentive texts a person on every subscribe and unsubscribe, so only real membership changes are sent,
once each; a mirror of an empty model, or one that would remove more than ``max_removals``, stops
before sending anything.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from airflow_provider_attentive.operators.subscriptions import AttentiveSubscriptionsOperator

with DAG(
    dag_id="attentive_vip_sms_list",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["attentive", "example"],
    doc_md=__doc__,
) as dag:
    AttentiveSubscriptionsOperator(
        task_id="vip_sms_list",
        # Named explicitly: the default (<dag_id>.<task_id>) changes when the DAG or task is renamed, and a new
        # sync_id starts from empty state, which would subscribe (and text) every member again.
        sync_id="vip_sms_list",
        sql="SELECT phone, email, first_name FROM vip_members",
        sql_conn_id="warehouse",
        mode="mirror",
        primary_key="phone",
        sign_up_source_id="64140",
        subscription_type="MARKETING",
        notify_on_unsubscribe=False,
        max_removals=0.2,
        default_region="US",
        emit_asset=True,
    )
