"""The routes of the OpenAPI document: every path, the statuses it answers, their bodies.

Written by hand rather than inferred from the handlers, so that every status a route
answers is listed with its body schema (the schemas are :mod:`api.openapi_components`).
"""

from __future__ import annotations

from typing import Any

from api import schemas
from engine.model import InstanceStatus

PROBLEM = "application/problem+json"

_STATUS_TEXT = {
    400: "Malformed request: invalid JSON, query parameter or id",
    401: "No API key, or an unknown or revoked one",
    403: "The API key lacks the scope this operation needs",
    404: "No such workflow or instance",
    409: "Conflict with the instance's current state",
    413: "The request body is too large",
    415: "The request body is not JSON by its Content-Type (none is taken as JSON)",
    422: "The body fails validation; `errors` names each field",
    503: "PostgreSQL is unavailable",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str, **headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(name)}},
    }
    if headers:
        response["headers"] = {
            header: {"description": text, "schema": {"type": "string"}}
            for header, text in headers.items()
        }
    return response


def _problems(*statuses: int) -> dict[str, Any]:
    codes = sorted({400, 401, 403, 413, 503, *statuses})
    return {
        str(code): {
            "description": _STATUS_TEXT[code],
            "content": {PROBLEM: {"schema": _ref("Problem")}},
        }
        for code in codes
    }


def _path_param(name: str, description: str, *, uuid: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if uuid:
        schema["format"] = "uuid"
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _body(name: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


def _op(
    summary: str,
    tag: str,
    scope: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    operation_id: str,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Needs an API key with the `{scope}` scope (admin > write > read).",
        "operationId": operation_id,
        "tags": [tag],
        "responses": responses,
        "security": [{"bearer": []}, {"apiKey": []}],
    }
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    return op


NAME = _path_param("name", "Workflow name, e.g. order")
INSTANCE = _path_param("instance_id", "Instance id", uuid=True)
VERSION = _query(
    "version",
    {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    "Workflow version; default: the latest",
)
IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}
TIME = {"type": "string", "format": "date-time"}
TEXT = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": schemas.NO_NUL}


def paths() -> dict[str, Any]:
    """The ``paths`` of the document; any operation may also answer 500."""
    routes: dict[str, Any] = {
        "/v1/workflows": {
            "get": _op(
                "List workflows",
                "workflows",
                "read",
                {"200": _json("WorkflowList", "Registered workflows"), **_problems()},
                operation_id="listWorkflows",
            )
        },
        "/v1/workflows/{name}": {
            "get": _op(
                "Describe a workflow version",
                "workflows",
                "read",
                {
                    "200": _json("WorkflowDetail", "States, transitions, events, timers"),
                    **_problems(404),
                },
                parameters=[NAME, VERSION],
                operation_id="getWorkflow",
            )
        },
        "/v1/workflows/{name}/diagram": {
            "get": _op(
                "Mermaid state diagram",
                "workflows",
                "read",
                {
                    "200": {
                        "description": "Mermaid stateDiagram-v2",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_problems(404),
                },
                parameters=[
                    NAME,
                    VERSION,
                    _query(
                        "instance",
                        {"type": "string", "format": "uuid"},
                        "Highlight this instance's current state",
                    ),
                ],
                operation_id="getDiagram",
            )
        },
        "/v1/workflows/{name}/instances": {
            "post": _op(
                "Start an instance",
                "workflows",
                "write",
                {
                    "201": _json(
                        "InstanceOut",
                        "Started (or, with a reused Idempotency-Key, the original response)",
                        Location="The new instance's URL",
                    ),
                    **_problems(404, 409, 415, 422),
                },
                parameters=[NAME, IDEMPOTENCY],
                body=_body("StartInstance"),
                operation_id="startInstance",
            )
        },
        "/v1/workflows/{name}/instances/{business_key}": {
            "get": _op(
                "Find an instance by business key",
                "workflows",
                "read",
                {
                    "200": _json(
                        "InstanceByKey",
                        "The instance holding the key (after a key reuse, the newest), "
                        "with the earlier instances of the key in `earlier`",
                    ),
                    **_problems(404),
                },
                parameters=[
                    NAME,
                    _path_param(
                        "business_key",
                        "Business key, percent-encoded as one path segment (%2F for /)",
                    ),
                ],
                operation_id="findInstance",
            )
        },
        "/v1/instances": {
            "get": _op(
                "List instances",
                "instances",
                "read",
                {"200": _json("InstancePage", "Newest first"), **_problems()},
                parameters=[
                    _query("workflow", TEXT, "Workflow name"),
                    _query("version", {"type": "integer", "minimum": 1}, "Workflow version"),
                    _query("state", TEXT, "Current state"),
                    _query(
                        "status",
                        {"type": "string", "enum": [s.value for s in InstanceStatus]},
                        "Status",
                    ),
                    _query("business_key_prefix", TEXT, "Business keys starting with this"),
                    _query("created_after", TIME, "Created at or after"),
                    _query("created_before", TIME, "Created before"),
                    _query("updated_after", TIME, "Updated at or after"),
                    _query("updated_before", TIME, "Updated before"),
                    _query(
                        "in_state_longer_than",
                        {"type": "string", "example": "PT2H"},
                        "ISO 8601 duration: running instances in their state for longer",
                    ),
                    _query(
                        "sla_breached",
                        {"type": "boolean"},
                        "Running instances past (true) or within (false) their state's SLA",
                    ),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size"),
                    _query(
                        "cursor",
                        {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 500,
                            "pattern": schemas.NO_NUL,
                        },
                        "next_cursor of the previous page",
                    ),
                ],
                operation_id="listInstances",
            )
        },
        "/v1/instances/{instance_id}": {
            "get": _op(
                "Get an instance",
                "instances",
                "read",
                {"200": _json("InstanceOut", "The instance"), **_problems(404)},
                parameters=[INSTANCE],
                operation_id="getInstance",
            )
        },
        "/v1/instances/{instance_id}/events": {
            "post": _op(
                "Send an event",
                "instances",
                "write",
                {
                    "200": _json("EventResult", "Applied, or a duplicate of an applied event"),
                    "202": _json(
                        "EventResult",
                        "Kept, not applied yet: a workflow action failed and a timer "
                        "retries it (retrying), the event waits behind an earlier "
                        "step's retry (parked), or the last attempt failed the "
                        "instance (failed; an operator's retry applies it)",
                    ),
                    **_problems(404, 409, 415, 422),
                },
                parameters=[INSTANCE, IDEMPOTENCY],
                body=_body("SendEvent"),
                operation_id="sendEvent",
            )
        },
        "/v1/instances/{instance_id}/history": {
            "get": _op(
                "Instance history",
                "instances",
                "read",
                {"200": _json("HistoryPage", "History entries in order"), **_problems(404)},
                parameters=[
                    INSTANCE,
                    _query(
                        "cursor",
                        {"type": "string", "pattern": schemas.DIGITS},
                        "The last history id already seen, in decimal digits (next_cursor "
                        "of the previous page); at most 9223372036854775807",
                    ),
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"
                    ),
                ],
                operation_id="getHistory",
            )
        },
        "/v1/instances/{instance_id}/cancel": {
            "post": _op(
                "Cancel an instance (operator)",
                "instances",
                "admin",
                {
                    "200": _json(
                        "CancelResult", "Cancelled by its cancel route, by status, or before"
                    ),
                    **_problems(404, 409, 415, 422),
                },
                parameters=[INSTANCE],
                body=_body("CancelInstance", required=False),
                operation_id="cancelInstance",
            )
        },
        "/v1/stats": {
            "get": _op(
                "Counts by workflow, version, state and status, with SLA breaches",
                "instances",
                "read",
                {"200": _json("Stats", "Counts as of now"), **_problems(404)},
                parameters=[_query("workflow", TEXT, "Only this workflow")],
                operation_id="getStats",
            )
        },
        "/v1/instances/{instance_id}/move": {
            "post": _op(
                "Move an instance into another state of its version (operator)",
                "instances",
                "admin",
                {
                    "200": _json("InstanceOut", "Moved: its timers are the new state's"),
                    **_problems(404, 409, 415, 422),
                },
                parameters=[INSTANCE],
                body=_body("MoveInstance"),
                operation_id="moveInstance",
            )
        },
        "/v1/instances/{instance_id}/timers": {
            "get": _op(
                "Pending timers of an instance",
                "instances",
                "read",
                {"200": _json("TimerList", "Soonest first"), **_problems(404)},
                parameters=[INSTANCE],
                operation_id="getTimers",
            )
        },
        "/v1/instances/{instance_id}/retry": {
            "post": _op(
                "Retry a failed instance (operator)",
                "instances",
                "admin",
                {
                    "200": _json("EventResult", "Re-activated; the failed event was applied"),
                    "202": _json(
                        "EventResult",
                        "Re-activated, but the event failed again (retrying, or failed)",
                    ),
                    **_problems(404, 409),
                },
                parameters=[INSTANCE],
                operation_id="retryInstance",
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                "operations",
                "read",
                {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_problems(),
                },
                operation_id="getMetrics",
            )
        },
        "/health": {
            "get": {
                "summary": "Liveness",
                "tags": ["operations"],
                "operationId": "health",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Alive",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"status": {"type": "string"}},
                                }
                            }
                        },
                    }
                },
            }
        },
        "/ready": {
            "get": {
                "summary": "Readiness: PostgreSQL and Kafka answer",
                "tags": ["operations"],
                "operationId": "ready",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Ready",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {"type": "string"},
                                        "checks": {"type": "object"},
                                    },
                                }
                            }
                        },
                    },
                    "503": {
                        "description": "A dependency is down",
                        "content": {PROBLEM: {"schema": _ref("Problem")}},
                    },
                },
            }
        },
    }
    for item in routes.values():
        for op in item.values():
            op["responses"].setdefault(
                "500",
                {
                    "description": "Unexpected error (no details are given)",
                    "content": {PROBLEM: {"schema": _ref("Problem")}},
                },
            )
    return routes
