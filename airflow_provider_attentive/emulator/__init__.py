"""Local emulator of the Attentive REST API (v1, and v2 bulk jobs and segments) for tests, demos and benchmarks.

Stands apart from the rest of the provider on purpose: it imports nothing from
``airflow_provider_attentive`` or Airflow, only the stdlib, ``jsonschema`` and (for
:class:`EmulatorClient`) ``httpx``, so it starts fast and can run as its own process.

    from airflow_provider_attentive.emulator import Emulator, KeySpec, ALL_SCOPES

    with Emulator(keys={"test-key": KeySpec(scopes=ALL_SCOPES)}) as emu:
        ...  # point the hook at emu.url; inspect with emu.client.stats()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .endpoints import ENDPOINT_NAMES
from .faults import FaultConfig
from .jobs import JobSettings
from .keys import ALL_SCOPES, KeySpec
from .limits import max_window
from .runner import Emulator, EmulatorProcess
from .server import EmulatorServer

if TYPE_CHECKING:
    from .client import EmulatorClient, EmulatorError

__all__ = [
    "ALL_SCOPES",
    "ENDPOINT_NAMES",
    "Emulator",
    "EmulatorClient",
    "EmulatorError",
    "EmulatorProcess",
    "EmulatorServer",
    "FaultConfig",
    "JobSettings",
    "KeySpec",
    "max_window",
]


def __getattr__(name: str) -> Any:
    # httpx is only needed by the control client; importing it lazily keeps
    # `attentive-emulator` start-up fast.
    if name in ("EmulatorClient", "EmulatorError"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
