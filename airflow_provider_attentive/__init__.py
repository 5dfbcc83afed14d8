"""Apache Airflow provider for Attentive: warehouse rows to custom attributes, events, subscriptions and segments.

The public names are imported lazily (PEP 562), so ``import airflow_provider_attentive`` (which Airflow's
provider manager does to read the version) never loads Airflow's operator machinery:

    from airflow_provider_attentive import AttentiveAttributesOperator, AttentiveHook
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from airflow_provider_attentive.hooks.attentive import AttentiveHook
    from airflow_provider_attentive.operators.attributes import AttentiveAttributesOperator
    from airflow_provider_attentive.operators.events import AttentiveEventsOperator
    from airflow_provider_attentive.operators.segments import AttentiveSegmentsOperator
    from airflow_provider_attentive.operators.subscriptions import AttentiveSubscriptionsOperator

#: public name -> the module that defines it
_LAZY = {
    "AttentiveHook": "airflow_provider_attentive.hooks.attentive",
    "AttentiveAttributesOperator": "airflow_provider_attentive.operators.attributes",
    "AttentiveEventsOperator": "airflow_provider_attentive.operators.events",
    "AttentiveSegmentsOperator": "airflow_provider_attentive.operators.segments",
    "AttentiveSubscriptionsOperator": "airflow_provider_attentive.operators.subscriptions",
}

__all__ = [
    "AttentiveAttributesOperator",
    "AttentiveEventsOperator",
    "AttentiveHook",
    "AttentiveSegmentsOperator",
    "AttentiveSubscriptionsOperator",
    "__version__",
]


def _lazy_exports(package: str, namespace: dict[str, Any], exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) the first time ``name`` is read.

    The value is then kept in ``namespace`` (the module's globals), so later look-ups skip the function.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__


# Defined here, not in a module of its own: importing the package root (as the emulator does, which must load
# nothing else of the product) then stays free of any other import. The client shares it.
__getattr__ = _lazy_exports(__name__, globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
