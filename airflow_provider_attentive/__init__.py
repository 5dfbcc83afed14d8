"""Apache Airflow provider for Attentive: warehouse rows to custom attributes, events and subscriptions.

The public names are imported lazily (PEP 562), so ``import airflow_provider_attentive`` (which Airflow's
provider manager does to read the version) never loads Airflow's operator machinery:

    from airflow_provider_attentive import AttentiveAttributesOperator, AttentiveHook
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_attentive._lazy import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from airflow_provider_attentive.hooks.attentive import AttentiveHook
    from airflow_provider_attentive.operators.attributes import AttentiveAttributesOperator
    from airflow_provider_attentive.operators.events import AttentiveEventsOperator
    from airflow_provider_attentive.operators.subscriptions import AttentiveSubscriptionsOperator

#: public name -> the module that defines it
_LAZY = {
    "AttentiveHook": "airflow_provider_attentive.hooks.attentive",
    "AttentiveAttributesOperator": "airflow_provider_attentive.operators.attributes",
    "AttentiveEventsOperator": "airflow_provider_attentive.operators.events",
    "AttentiveSubscriptionsOperator": "airflow_provider_attentive.operators.subscriptions",
}

__all__ = [
    "AttentiveAttributesOperator",
    "AttentiveEventsOperator",
    "AttentiveHook",
    "AttentiveSubscriptionsOperator",
    "__version__",
]


__getattr__ = lazy_exports(__name__, globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
