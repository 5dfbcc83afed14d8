"""Benchmarks, run as modules from the repository root: ``.venv/bin/python -m benchmarks.<name>`` (or ``make bench``)."""
