"""The schedule routes of the OpenAPI document (``/v1/schedules``) and their schemas
(``api.schedule_schemas.SCHEDULE_MODELS``), both merged by :mod:`api.openapi`."""

from __future__ import annotations

from typing import Any

from api.openapi_components import model_schemas
from api.openapi_paths import _json, _op, _path_param, _problems, _query
from api.schedule_schemas import SCHEDULE_MODELS

SCHEDULE = _path_param("name", "Schedule name")


def components() -> dict[str, Any]:
    """The schedule models' schemas, in OpenAPI 3.0's dialect."""
    return model_schemas(SCHEDULE_MODELS)


def _action(summary: str, what: str, operation_id: str) -> dict[str, Any]:
    return {
        "post": _op(
            summary,
            "schedules",
            "admin",
            {"200": _json("ScheduleOut", what), **_problems(404)},
            parameters=[SCHEDULE],
            operation_id=operation_id,
        )
    }


def paths() -> dict[str, Any]:
    """The schedule paths; any operation may also answer 500."""
    return {
        "/v1/schedules": {
            "get": _op(
                "List the declared schedules and where each stands",
                "schedules",
                "read",
                {"200": _json("ScheduleList", "By name"), **_problems()},
                operation_id="listSchedules",
            )
        },
        "/v1/schedules/{name}": {
            "get": _op(
                "Get a schedule: its next tick, last tick and outcome, paused or not",
                "schedules",
                "read",
                {"200": _json("ScheduleOut", "The schedule"), **_problems(404)},
                parameters=[SCHEDULE],
                operation_id="getSchedule",
            )
        },
        "/v1/schedules/{name}/ticks": {
            "get": _op(
                "A schedule's ticks, newest first",
                "schedules",
                "read",
                {"200": _json("TickPage", "Fired and skipped ticks"), **_problems(404)},
                parameters=[
                    SCHEDULE,
                    _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"
                    ),
                ],
                operation_id="listScheduleTicks",
            )
        },
        "/v1/schedules/{name}/pause": _action(
            "Pause a schedule (operator)", "Paused", "pauseSchedule"
        ),
        "/v1/schedules/{name}/resume": _action(
            "Resume a schedule from its next tick (operator)", "Resumed", "resumeSchedule"
        ),
        "/v1/schedules/{name}/trigger": {
            "post": _op(
                "Fire a schedule now, with an id of its own (operator)",
                "schedules",
                "admin",
                {"201": _json("TickOut", "The tick and what it did"), **_problems(404)},
                parameters=[SCHEDULE],
                operation_id="triggerSchedule",
            )
        },
    }
