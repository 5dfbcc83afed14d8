"""Example: send an "Order Shipped" custom event once per order, for the orders shipped in each interval.

The interval-based timetable gives each run a real ``data_interval_start``/``end`` (Airflow 3's default
cron timetable makes them equal), so the SQL selects one slice per run and a backfill
(``airflow backfill create --dag-id attentive_order_shipped_events --from-date ... --to-date ...``) replays
slices safely: an order already delivered is never sent again, even over overlapping intervals.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable

from airflow_provider_attentive.operators.events import AttentiveEventsOperator

with DAG(
    dag_id="attentive_order_shipped_events",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["attentive", "example"],
    doc_md=__doc__,
) as dag:
    AttentiveEventsOperator(
        task_id="order_shipped_events",
        # Named explicitly: each event's externalEventId and the record of what was delivered belong to the
        # sync_id, and the default (<dag_id>.<task_id>) would change if the DAG or task were renamed.
        sync_id="order_shipped",
        sql="""
            SELECT order_id, phone, email, shipped_at, carrier, tracking_url
            FROM shipments
            WHERE shipped_at >= '{{ data_interval_start.strftime("%Y-%m-%d %H:%M:%S") }}'
              AND shipped_at <  '{{ data_interval_end.strftime("%Y-%m-%d %H:%M:%S") }}'
        """,
        sql_conn_id="warehouse",
        primary_key="order_id",
        event_type="Order Shipped",
        mapping={
            "phone": "phone",
            "email": "email",
            "shipped_at": "timestamp",
            "carrier": "properties.carrier",
            "tracking_url": "properties.trackingUrl",
        },
        default_region="US",
        emit_asset=True,
    )
