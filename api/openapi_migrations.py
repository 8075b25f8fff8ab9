"""The migration routes of the OpenAPI document (``/v1/workflows/{name}/migrations`` and
``/v1/migrations``) and their schemas (``api.migration_schemas.MIGRATION_MODELS``), both
merged by :mod:`api.openapi`."""

from __future__ import annotations

from typing import Any

from api.migration_schemas import MIGRATION_MODELS
from api.openapi_components import model_schemas
from api.openapi_paths import (
    IDEMPOTENCY,
    NAME,
    PROBLEM,
    _body,
    _json,
    _op,
    _path_param,
    _problems,
    _query,
)

JOB = _path_param("job_id", "Migration job id", uuid=True)


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def components() -> dict[str, Any]:
    """The migration models' schemas (and those they refer to), in OpenAPI 3.0's dialect."""
    return model_schemas(MIGRATION_MODELS)


def paths() -> dict[str, Any]:
    """The migration paths; any operation may also answer 500."""
    job = _json("MigrationJobOut", "The job: status, counters, progress")
    routes: dict[str, Any] = {
        "/v1/workflows/{name}/migrations": {
            "get": _op(
                "List the migrations a workflow declares",
                "migrations",
                "read",
                {
                    "200": _json("MigrationList", "By source, then target version"),
                    **_problems(404),
                },
                parameters=[NAME],
                operation_id="listMigrations",
            ),
            "post": _op(
                "Dry-run or apply a migration of running instances (operator)",
                "migrations",
                "admin",
                {
                    "200": {
                        "description": "A dry run (each selected instance judged by replay; "
                        "nothing written), or the job an Idempotency-Key made before",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/MigrationReportOut"},
                                        {"$ref": "#/components/schemas/MigrationJobOut"},
                                    ]
                                }
                            }
                        },
                    },
                    "202": _json(
                        "MigrationJobOut",
                        "The job is created; workers apply it",
                        Location="The job",
                    ),
                    "400": _problem(
                        "Malformed request, or an unknown or bad filter (a state the source "
                        "version does not declare, ...)"
                    ),
                    "404": _problem("Unknown workflow, or no migration between those versions"),
                    "422": _problem(
                        "The body fails validation, too many instances match, or the "
                        "Idempotency-Key names a different job"
                    ),
                    **_problems(415),
                },
                parameters=[NAME, IDEMPOTENCY],
                body=_body("CreateMigration"),
                operation_id="createMigration",
            ),
        },
        "/v1/migrations/{job_id}": {
            "get": _op(
                "Get a migration job",
                "migrations",
                "read",
                {"200": job, **_problems(404)},
                parameters=[JOB],
                operation_id="getMigrationJob",
            )
        },
        "/v1/migrations/{job_id}/items": {
            "get": _op(
                "A migration job's items, with what each was migrated to or why it was skipped",
                "migrations",
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
                operation_id="listMigrationJobItems",
            )
        },
        "/v1/migrations/{job_id}/cancel": {
            "post": _op(
                "Stop a running migration job (operator)",
                "migrations",
                "admin",
                {
                    "200": _json("MigrationJobOut", "Cancelled (or finished before)"),
                    **_problems(404),
                },
                parameters=[JOB],
                operation_id="cancelMigrationJob",
            )
        },
    }
    for item in routes.values():
        for op in item.values():
            op["responses"].setdefault("500", _problem("Unexpected error (no details are given)"))
    return routes
