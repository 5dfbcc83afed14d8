"""The package's public face: the hook and the operators from the top level, loaded only when asked for."""

from __future__ import annotations

import subprocess
import sys

import airflow_provider_attentive


def test_the_top_level_names_are_the_documented_classes() -> None:
    from airflow_provider_attentive import (
        AttentiveAttributesOperator,
        AttentiveEventsOperator,
        AttentiveHook,
        AttentiveSegmentsOperator,
        AttentiveSubscriptionsOperator,
    )
    from airflow_provider_attentive.hooks.attentive import AttentiveHook as hook_from_module
    from airflow_provider_attentive.operators.attributes import AttentiveAttributesOperator as attributes
    from airflow_provider_attentive.operators.events import AttentiveEventsOperator as events
    from airflow_provider_attentive.operators.segments import AttentiveSegmentsOperator as segments
    from airflow_provider_attentive.operators.subscriptions import AttentiveSubscriptionsOperator as subscriptions

    assert AttentiveHook is hook_from_module
    assert (
        AttentiveAttributesOperator,
        AttentiveEventsOperator,
        AttentiveSubscriptionsOperator,
        AttentiveSegmentsOperator,
    ) == (attributes, events, subscriptions, segments)
    assert set(airflow_provider_attentive.__all__) >= {
        "AttentiveHook",
        "AttentiveAttributesOperator",
        "AttentiveEventsOperator",
        "AttentiveSubscriptionsOperator",
        "AttentiveSegmentsOperator",
    }


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        airflow_provider_attentive.AttentiveNothing  # noqa: B018
    except AttributeError as exc:
        assert "AttentiveNothing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_loads_neither_airflow_nor_httpx() -> None:
    code = (
        "import sys, airflow_provider_attentive, airflow_provider_attentive.client\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'httpx'))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
