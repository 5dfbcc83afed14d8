"""Apache Airflow provider for Attentive: warehouse rows to custom attributes, events and subscriptions."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
