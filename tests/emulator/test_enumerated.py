"""UI-created enumerated attributes accept only their defined values (Attentive's documented rule)."""

from __future__ import annotations

import httpx

from airflow_provider_attentive.emulator import Emulator
from tests.helpers.emulator import PHONE, error_message


def test_enumerated_attribute_refuses_undefined_values(attentive_emulator: Emulator, api: httpx.Client) -> None:
    attentive_emulator.client.set_enumerated_attributes({"tier": ["gold", "silver"]})
    ok = api.post("/attributes/custom", json={"user": {"phone": PHONE}, "properties": {"tier": "gold", "x": 1}})
    assert ok.status_code == 200
    bad = api.post("/attributes/custom", json={"user": {"phone": PHONE}, "properties": {"tier": "diamond"}})
    assert bad.status_code == 400 and "enumerated" in error_message(bad) and "'diamond'" in error_message(bad)
    assert attentive_emulator.client.attributes()[PHONE] == {"tier": "gold", "x": 1}
    attentive_emulator.client.reset()
    again = api.post("/attributes/custom", json={"user": {"phone": PHONE}, "properties": {"tier": "diamond"}})
    assert again.status_code == 200, "reset clears the enumerated attributes"
