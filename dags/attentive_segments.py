"""Example: an Attentive segment that mirrors a SQL audience (gold-tier customers), texting no one.

Campaigns and journeys target the segment; joining or leaving it sends nobody a message, unlike a subscription
list. Members go out through Attentive's v2 bulk member jobs (up to 10,000 people a request), which Attentive
completes within hours: the task waits ``bulk_wait`` seconds for them, and whatever is still running then is
read by the next run. A mirror only ever removes people it added, and stops before removing more than
``max_removals``, or anyone at all when the model comes back empty.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from airflow_provider_attentive.operators.segments import AttentiveSegmentsOperator

with DAG(
    dag_id="attentive_vip_gold_segment",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["attentive", "example"],
    doc_md=__doc__,
) as dag:
    AttentiveSegmentsOperator(
        task_id="vip_gold_segment",
        # Named explicitly: the default (<dag_id>.<task_id>) changes when the DAG or task is renamed, and a new
        # sync_id does not know the members the old one added (nor may it keep the same segment).
        sync_id="vip_gold_segment",
        sql="SELECT customer_id, phone, email FROM customers WHERE loyalty_tier = 'gold'",
        sql_conn_id="warehouse",
        primary_key="customer_id",
        segment_external_id="vip_gold",
        segment_name="VIP Gold (warehouse)",
        mode="mirror",
        max_removals=0.2,
        default_region="US",
        emit_asset=True,
        # Up to 10 minutes in the worker; deferrable=True would wait in the triggerer instead, holding no slot.
        bulk_wait=600,
    )
