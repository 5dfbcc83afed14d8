"""Fault injection, as a client of the emulator observes it."""

from __future__ import annotations

import time

import httpx
import pytest

from airflow_provider_attentive.emulator import Emulator, EmulatorError
from airflow_provider_attentive.emulator.faults import FaultConfig, FaultInjector
from tests.helpers.emulator import PHONE

BODY = {"properties": {"a": "1"}, "user": {"phone": PHONE}}


def test_error_faults_answer_5xx_without_applying(api: httpx.Client, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(error_rate=1.0, seed=1)
    statuses = set()
    for _ in range(20):
        response = api.post("/attributes/custom", json=BODY)
        statuses.add(response.status_code)
        assert response.headers["content-type"] == "application/json"
        assert "injected" in response.json()["error"]["message"]
        assert "x-ratelimit-remaining" in response.headers
    assert statuses == {500, 502, 503}
    client = attentive_emulator.client
    assert client.attributes() == {}
    stats = client.stats()["endpoints"]["attributes"]
    assert stats["faults"]["error"] == 20
    assert sum(stats["status"].values()) == 20


def test_non_json_fault_is_502_html(api: httpx.Client, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(non_json_rate=1.0)
    response = api.post("/attributes/custom", json=BODY)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().startswith("<html>")
    with pytest.raises(ValueError):
        response.json()
    assert attentive_emulator.client.attributes() == {}


def test_drop_aborts_the_connection_without_applying(api: httpx.Client, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(drop_rate=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.post("/attributes/custom", json=BODY)
    assert attentive_emulator.client.attributes() == {}
    assert attentive_emulator.client.stats()["endpoints"]["attributes"]["faults"]["drop"] == 1
    [entry] = attentive_emulator.client.requests(endpoint="attributes")
    assert entry["fault"] == "drop"
    assert entry["status"] is None


def test_drop_after_apply_applies_then_aborts(api: httpx.Client, attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(drop_after_apply_rate=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.post("/attributes/custom", json=BODY)
    assert attentive_emulator.client.attributes() == {PHONE: {"a": "1"}}
    # A retry is answered normally once the fault is gone, and is idempotent for attributes.
    attentive_emulator.client.set_faults()
    assert api.post("/attributes/custom", json=BODY).status_code == 200


def test_hang_holds_the_request_then_closes(attentive_emulator: Emulator) -> None:
    attentive_emulator.client.set_faults(hang_rate=1.0, hang_s=0.6)
    headers = {"Authorization": "Bearer test-key"}
    url = f"{attentive_emulator.url}/v1/attributes/custom"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=BODY, headers=headers, timeout=0.2)
    started = time.monotonic()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(url, json=BODY, headers=headers, timeout=5)
    assert time.monotonic() - started >= 0.55
    assert attentive_emulator.client.attributes() == {}


def test_latency_is_measurable(api: httpx.Client, attentive_emulator: Emulator) -> None:
    api.get("/me")  # warm the connection
    attentive_emulator.client.set_faults(latency_ms=150, jitter_ms=20, seed=3)
    started = time.monotonic()
    response = api.post("/attributes/custom", json=BODY)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert 0.125 <= elapsed < 1.0


def test_faults_can_target_endpoints_and_never_touch_control_routes(
    api: httpx.Client, attentive_emulator: Emulator
) -> None:
    client = attentive_emulator.client
    client.set_faults(error_rate=1.0, endpoints=["events"])
    assert api.post("/attributes/custom", json=BODY).status_code == 200
    assert api.post("/events/custom", json={"type": "t", "user": {"phone": PHONE}}).status_code in (500, 502, 503)
    client.set_faults(drop_rate=1.0)
    assert client.stats()["endpoints"]["events"]["faults"]["error"] == 1  # control routes still answer


def test_fault_settings_are_validated(attentive_emulator: Emulator) -> None:
    with pytest.raises(EmulatorError, match="sum"):
        attentive_emulator.client.set_faults(error_rate=0.7, drop_rate=0.5)
    with pytest.raises(EmulatorError, match="unknown endpoint"):
        attentive_emulator.client.set_faults(error_rate=0.1, endpoints=["bogus"])


def test_seeded_faults_replay_identically() -> None:
    config = FaultConfig(error_rate=0.2, drop_rate=0.1, non_json_rate=0.1, latency_ms=10, jitter_ms=5, seed=42)
    first = FaultInjector(config)
    second = FaultInjector(config)
    runs = [[inj.decide("attributes") for _ in range(500)] for inj in (first, second)]
    assert runs[0] == runs[1]
    kinds = [d.kind for d in runs[0]]
    assert 60 <= kinds.count("error") <= 140
    assert 20 <= kinds.count("drop") <= 80
    assert all(0.005 <= d.delay_s <= 0.015 for d in runs[0])
