"""Transport layer: endpoints, rate limiting, retry policy, the HTTP transport and the Airflow hook.

Only ``attentive`` (the hook) imports Airflow; ``endpoints``, ``ratelimit``, ``retry`` and ``transport``
are plain Python so the sync engine can use them without Airflow. Nothing is imported here, so that
importing one of those modules never drags Airflow in.
"""
