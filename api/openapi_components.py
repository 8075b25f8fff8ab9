"""The components of the OpenAPI document: the API's pydantic models as schemas.

pydantic writes JSON Schema 2020-12; sanic-ext serves OpenAPI 3.0, whose schema dialect
differs (``nullable`` instead of a ``null`` variant, no ``const``, no ``examples``), so each
model's schema is adapted here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from api import bulk_schemas, key_reuse, schemas

REF = "#/components/schemas/{model}"

MODELS: tuple[type[BaseModel], ...] = (
    schemas.StartInstance,
    schemas.SendEvent,
    schemas.CancelInstance,
    schemas.MoveInstance,
    schemas.InstanceOut,
    schemas.InstancePage,
    schemas.CancelResult,
    schemas.TimerList,
    schemas.Stats,
    schemas.HistoryPage,
    schemas.EventResult,
    schemas.WorkflowList,
    schemas.WorkflowDetail,
    schemas.Problem,
    *schemas.DEAD_LETTER_MODELS,
    *bulk_schemas.BULK_MODELS,
    *key_reuse.KEY_REUSE_MODELS,
)


def to_openapi30(node: Any) -> Any:
    """Adapt pydantic's JSON Schema (2020-12) to OpenAPI 3.0's dialect."""
    if isinstance(node, list):
        return [to_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: to_openapi30(v) for k, v in node.items() if k not in ("examples",)}
    variants = node.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants:
        rest = [v for v in variants if v != {"type": "null"}]
        del node["anyOf"]
        if len(rest) == 1:
            inner = rest[0]
            if "$ref" in inner:
                node["allOf"] = [inner]
            else:
                node.update(inner)
        else:
            node["anyOf"] = rest
        node["nullable"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    return node


def components() -> dict[str, Any]:
    """Every model's schema (and the schemas they refer to), by name, in OpenAPI 3.0's dialect."""
    return model_schemas(MODELS)


def model_schemas(models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """The schemas of ``models`` and of those they refer to, by name, in OpenAPI 3.0's
    dialect (every route module's components come through here)."""
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        for name, definition in schema.pop("$defs", {}).items():
            found[name] = to_openapi30(definition)
        found[model.__name__] = to_openapi30(schema)
    return found


def security_schemes() -> dict[str, Any]:
    """How a request carries its API key: a bearer token or the ``X-API-Key`` header."""
    return {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "cvk_<prefix>_<secret>",
            "description": "An API key from `conveyor apikey create`.",
        },
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
