"""The sync engine and its parts, in plain Python (no Airflow): read, key, classify, prepare, send, record.

``engine`` runs one loop for every object type; ``object_type`` is the interface a type implements and
``objects`` holds the types; ``delivery`` is how planned requests reach Attentive; ``source``, ``state`` and
``summary`` are the model, the state store and the run's counts. See ``docs/architecture.md``.
"""
