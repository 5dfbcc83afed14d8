"""Request-body validation against Attentive's own OpenAPI documents (v1, and v2 for bulk jobs and segments).

The OpenAPI 3.0 dialect is close to JSON Schema draft 4 (boolean ``exclusiveMinimum`` and
friends) except for ``nullable``, which is translated here into a ``"null"`` type. ``$ref``s
into ``#/components/schemas`` are inlined so each validator is self-contained and fast;
validators are built once per process.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT4

from .api_v1 import V1_ROUTES
from .api_v2 import V2_ROUTES
from .routing import Route

__all__ = [
    "DOCUMENTS",
    "OPENAPI_PATH",
    "REQUEST_OPERATIONS",
    "V2_OPENAPI_PATH",
    "ApiDocument",
    "RequestValidator",
    "get_request_validator",
    "translate_nullable",
]

OPENAPI_PATH = Path(__file__).parent / "openapi" / "attentive-v1-openapi.json"
V2_OPENAPI_PATH = Path(__file__).parent / "openapi" / "attentive-v2-openapi.json"


@dataclass(frozen=True)
class ApiDocument:
    """One published OpenAPI document and the emulated routes it describes.

    ``base_path`` is what the document's server URL adds to its paths (``/v1``: its paths read
    ``/me``; the v2 document spells out ``/v2/...`` itself).
    """

    path: Path
    uri: str
    base_path: str
    routes: tuple[Route, ...]

    def operations(self) -> dict[str, tuple[str, str]]:
        """Endpoint name -> (OpenAPI path, method) of the routes that read a JSON body."""
        return {
            route.name: (route.path.removeprefix(self.base_path), route.method.lower())
            for route in self.routes
            if route.body != "none"
        }


DOCUMENTS: tuple[ApiDocument, ...] = (
    ApiDocument(OPENAPI_PATH, "urn:attentive:v1-openapi", "/v1", V1_ROUTES),
    ApiDocument(V2_OPENAPI_PATH, "urn:attentive:v2-openapi", "", V2_ROUTES),
)

#: Emulator endpoint name -> (path in its OpenAPI document, method) for operations with a JSON body.
REQUEST_OPERATIONS: dict[str, tuple[str, str]] = {
    name: operation for document in DOCUMENTS for name, operation in document.operations().items()
}

# Keywords whose value is a single subschema / list of subschemas / name->subschema map.
_SUBSCHEMA = ("items", "additionalProperties", "not")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SUBSCHEMA_MAPS = ("properties", "patternProperties")


def translate_nullable(schema: Any) -> Any:
    """Return a copy of an OpenAPI 3.0 schema with ``nullable: true`` expressed in JSON Schema.

    Walks only schema positions, so a *property* that happens to be called ``nullable`` is
    left alone.
    """
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SUBSCHEMA:
            out[key] = [translate_nullable(v) for v in value] if isinstance(value, list) else translate_nullable(value)
        elif key in _SUBSCHEMA_LISTS:
            out[key] = [translate_nullable(v) for v in value]
        elif key in _SUBSCHEMA_MAPS:
            out[key] = {name: translate_nullable(v) for name, v in value.items()}
        elif key != "nullable":
            out[key] = value
    if schema.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"] if "null" not in types else types
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            # $ref / allOf without a type: OpenAPI says null is still acceptable.
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _inline_refs(node: Any, components: Mapping[str, Any], uri: str, stack: tuple[str, ...] = ()) -> Any:
    """Replace ``#/components/schemas/X`` refs by their (translated) target, except on cycles."""
    if isinstance(node, list):
        return [_inline_refs(v, components, uri, stack) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        name = ref.rsplit("/", 1)[1]
        if name in stack:
            # Recursive schema: keep the ref and let the registry resolve it lazily.
            return {"$ref": f"{uri}{ref}"}
        return _inline_refs(components[name], components, uri, (*stack, name))
    return {k: _inline_refs(v, components, uri, stack) for k, v in node.items()}


def _format_path(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(body)"


class RequestValidator:
    """Validates request bodies of the emulated operations against their OpenAPI documents' schemas."""

    def __init__(self, documents: Iterable[ApiDocument] = DOCUMENTS) -> None:
        self.schema_names: dict[str, str] = {}
        self._validators: dict[str, Draft4Validator] = {}
        for document in documents:
            self._load(document)

    def _load(self, document: ApiDocument) -> None:
        with document.path.open(encoding="utf-8") as fh:
            spec = json.load(fh)
        raw_components = spec.get("components", {}).get("schemas", {})
        components = {name: translate_nullable(s) for name, s in raw_components.items()}
        translated_spec = copy.copy(spec)
        translated_spec["components"] = {**spec.get("components", {}), "schemas": components}
        registry: Registry = Registry().with_resource(document.uri, DRAFT4.create_resource(translated_spec))
        for endpoint, (path, method) in document.operations().items():
            body_schema = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
            ref = body_schema.get("$ref", "")
            self.schema_names[endpoint] = ref.rsplit("/", 1)[-1] if ref else f"{method.upper()} {path}"
            schema = _inline_refs(translate_nullable(body_schema), components, document.uri)
            Draft4Validator.check_schema(schema)
            self._validators[endpoint] = Draft4Validator(schema, registry=registry)

    def validate(self, endpoint: str, body: Any) -> str | None:
        """Return a readable reason when ``body`` violates the operation's schema, else None."""
        validator = self._validators[endpoint]
        error = best_match(validator.iter_errors(body))
        if error is None:
            return None
        return (
            f"request body does not match {self.schema_names[endpoint]}: "
            f"{_format_path(error.absolute_path)}: {error.message}"
        )


@functools.cache
def get_request_validator() -> RequestValidator:
    """Process-wide validator (building the validators costs a few milliseconds)."""
    return RequestValidator()
