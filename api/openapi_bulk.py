"""The ``/v1/bulk`` routes of the OpenAPI document (merged by :mod:`api.openapi`); their
schemas are ``api.bulk_schemas.BULK_MODELS``."""

from __future__ import annotations

from typing import Any

from api.openapi_paths import (
    IDEMPOTENCY,
    PROBLEM,
    _body,
    _json,
    _op,
    _path_param,
    _problems,
    _query,
)

JOB = _path_param("job_id", "Bulk job id", uuid=True)


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def paths() -> dict[str, Any]:
    """The bulk paths; any operation may also answer 500."""
    job = _json("BulkJobOut", "The job: status, counters, progress")
    routes: dict[str, Any] = {
        "/v1/bulk": {
            "post": _op(
                "Cancel, retry or send an event to many instances (operator)",
                "bulk",
                "admin",
                {
                    "200": {
                        "description": "A dry run (count and sample; nothing written), or "
                        "the job an Idempotency-Key made before",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/BulkPreviewOut"},
                                        {"$ref": "#/components/schemas/BulkJobOut"},
                                    ]
                                }
                            }
                        },
                    },
                    "202": _json(
                        "BulkJobOut", "The job is created; workers apply it", Location="The job"
                    ),
                    "400": _problem(
                        "Malformed request, or an unknown, bad or empty filter (name it, or "
                        'give "all": true)'
                    ),
                    "404": _problem("The filter names an unknown workflow (with data)"),
                    "422": _problem(
                        "The body fails validation, more instances match than a job may "
                        "hold, or the Idempotency-Key names a different job"
                    ),
                    **_problems(415),
                },
                parameters=[IDEMPOTENCY],
                body=_body("CreateBulkJob"),
                operation_id="createBulkJob",
            )
        },
        "/v1/bulk/{job_id}": {
            "get": _op(
                "Get a bulk job",
                "bulk",
                "read",
                {"200": job, **_problems(404)},
                parameters=[JOB],
                operation_id="getBulkJob",
            )
        },
        "/v1/bulk/{job_id}/items": {
            "get": _op(
                "A bulk job's items, with why each was skipped or failed",
                "bulk",
                "read",
                {"200": _json("BulkItemPage", "In instance id order"), **_problems(404)},
                parameters=[
                    JOB,
                    _query(
                        "status",
                        {"type": "string", "enum": ["pending", "succeeded", "skipped", "failed"]},
                        "Only items with this status",
                    ),
                    _query(
                        "cursor",
                        {"type": "string", "format": "uuid"},
                        "next_cursor of the previous page",
                    ),
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"
                    ),
                ],
                operation_id="listBulkJobItems",
            )
        },
        "/v1/bulk/{job_id}/cancel": {
            "post": _op(
                "Stop a running bulk job (operator)",
                "bulk",
                "admin",
                {"200": _json("BulkJobOut", "Cancelled (or finished before)"), **_problems(404)},
                parameters=[JOB],
                operation_id="cancelBulkJob",
            )
        },
    }
    for item in routes.values():
        for op in item.values():
            op["responses"].setdefault("500", _problem("Unexpected error (no details are given)"))
    return routes
