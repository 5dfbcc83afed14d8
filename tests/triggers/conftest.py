"""Fixtures for the trigger tests: the emulator (``attentive_emulator``, from its pytest plugin) and ``stub_server``."""

from __future__ import annotations

from tests.helpers.stub_server import closed_port_url, stub_server

__all__ = ["closed_port_url", "stub_server"]
