"""Airflow triggers: waiting for Attentive in the triggerer instead of a worker slot.

:class:`~airflow_provider_attentive.triggers.bulk_job.AttentiveBulkJobTrigger` waits for v2 bulk jobs.
Nothing is imported here, so that importing this package never drags Airflow in.
"""
