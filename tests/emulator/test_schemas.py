"""OpenAPI request-schema validation: $ref resolution, nullable translation, messages."""

from __future__ import annotations

from airflow_provider_attentive.emulator.schemas import RequestValidator, get_request_validator, translate_nullable


def test_validators_are_built_once() -> None:
    assert get_request_validator() is get_request_validator()


def test_request_schemas_come_from_the_openapi_operations() -> None:
    assert get_request_validator().schema_names == {
        "attributes": "CustomAttributesRequest",
        "events": "CustomEventsRequest",
        "subscribe": "AddSubscriptionsRequestDto",
        "unsubscribe": "UnsubscribeSubscriptionsRequestDto",
        "identity": "IdentifyRequestDto",
        "bulk": "UserAttributes",
        "segment_members_add": "SegmentMembers",
        "segment_members_remove": "SegmentMembers",
        "segment_create": "CreateSegmentRequest",
        "segment_update": "PatchSegmentRequest",
    }


def test_missing_required_field_is_reported_with_schema_name() -> None:
    validator: RequestValidator = get_request_validator()
    message = validator.validate("events", {"user": {"phone": "+14155550100"}})
    assert message == "request body does not match CustomEventsRequest: (body): 'type' is a required property"
    nested = validator.validate("unsubscribe", {"user": {}, "subscriptions": [{"type": "NOPE"}]})
    assert nested is not None
    assert "subscriptions[0].type" in nested
    assert validator.validate("attributes", {"properties": {}, "user": {"email": "a@b.c"}}) is None


def test_translate_nullable() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "nullable": True},
            "b": {"type": "string", "enum": ["x"], "nullable": True},
            "c": {"$ref": "#/components/schemas/X", "nullable": True},
            # A property literally called "nullable" is data, not the keyword.
            "nullable": {"type": "integer"},
        },
        "items": {"type": "array", "items": {"type": "number", "nullable": True}},
    }
    out = translate_nullable(schema)
    assert out["properties"]["a"] == {"type": ["string", "null"]}
    assert out["properties"]["b"] == {"type": ["string", "null"], "enum": ["x", None]}
    assert out["properties"]["c"] == {"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]}
    assert out["properties"]["nullable"] == {"type": "integer"}
    assert out["items"]["items"] == {"type": ["number", "null"]}
