"""Example: keep Attentive custom attributes (loyalty tier, lifetime value) in sync with the warehouse.

Connections: ``warehouse`` (any SQL connection) and ``attentive_default`` (type ``attentive``).
Only customers whose attributes changed since the last successful sync are sent.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from airflow_provider_attentive.operators.attributes import AttentiveAttributesOperator

with DAG(
    dag_id="attentive_loyalty_attributes",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["attentive", "example"],
    doc_md=__doc__,
) as dag:
    AttentiveAttributesOperator(
        task_id="sync_loyalty",
        sql="SELECT customer_id, phone, email, loyalty_tier, ltv FROM customers",
        sql_conn_id="warehouse",
        primary_key="customer_id",
        mapping={"phone": "phone", "email": "email", "loyalty_tier": "loyalty_tier", "ltv": "lifetime_value"},
        default_region="US",
        emit_asset=True,
    )
