"""Fixtures for the hook tests.

Most tests talk real HTTP to the Attentive emulator (``attentive_emulator`` from the emulator's pytest
plugin); answers it does not give come from ``stub_server``; ``redis_server`` backs the shared budget.
"""

from __future__ import annotations

from tests.helpers.redis import _redis_module, redis_server
from tests.helpers.stub_server import closed_port_url, stub_server

__all__ = ["_redis_module", "closed_port_url", "redis_server", "stub_server"]
