"""The Airflow hook: :class:`~airflow_provider_attentive.hooks.attentive.AttentiveHook` and its connection handling.

The HTTP client it hands out lives in :mod:`airflow_provider_attentive.client`, which imports no Airflow.
Nothing is imported here, so that importing this package never drags Airflow in.
"""
