"""The ``/v1/dead-letters`` routes of the OpenAPI document (merged by :mod:`api.openapi`);
their schemas are ``api.schemas.DEAD_LETTER_MODELS``."""

from __future__ import annotations

from typing import Any

from api import schemas
from api.openapi_paths import PROBLEM, TEXT, TIME, _body, _json, _op, _path_param, _problems, _query

LETTER = _path_param("letter_id", "Dead letter id (a positive integer)")
LETTER["schema"] = {"type": "string", "pattern": schemas.DIGITS}


def paths() -> dict[str, Any]:
    """The dead-letter paths; any operation may also answer 500."""
    routes: dict[str, Any] = {
        "/v1/dead-letters": {
            "get": _op(
                "List dead letters",
                "dead letters",
                "read",
                {"200": _json("DeadLetterPage", "Newest first"), **_problems()},
                parameters=[
                    _query("reason", TEXT, "Why it is dead, e.g. invalid_payload"),
                    _query(
                        "topic",
                        {**TEXT, "maxLength": 300},
                        "The topic it was consumed from",
                    ),
                    _query("workflow", TEXT, "Workflow it was for"),
                    _query("business_key", TEXT, "Business key it was for"),
                    _query(
                        "status",
                        {"type": "string", "enum": ["pending", "replayed", "discarded"]},
                        "Status",
                    ),
                    _query("since", TIME, "First seen at or after"),
                    _query("until", TIME, "First seen before"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size"),
                    _query(
                        "cursor",
                        {"type": "string", "pattern": schemas.DIGITS},
                        "next_cursor of the previous page",
                    ),
                ],
                operation_id="listDeadLetters",
            )
        },
        "/v1/dead-letters/{letter_id}": {
            "get": _op(
                "Get a dead letter",
                "dead letters",
                "read",
                {
                    "200": _json("DeadLetterOut", "The message, why, and what became of it"),
                    **_problems(404),
                },
                parameters=[LETTER],
                operation_id="getDeadLetter",
            )
        },
        "/v1/dead-letters/{letter_id}/replay": {
            "post": _op(
                "Replay a dead letter (operator)",
                "dead letters",
                "admin",
                {
                    "200": _json(
                        "DeadLetterOut",
                        "Applied (or already in effect): the dead letter is replayed",
                    ),
                    "409": _problem("The dead letter was replayed or discarded already"),
                    "422": _problem(
                        "The body fails validation, or the message still cannot apply "
                        "(`reason` says why); the dead letter stays pending"
                    ),
                    **_problems(404, 415),
                },
                parameters=[LETTER],
                body=_body("ReplayDeadLetter", required=False),
                operation_id="replayDeadLetter",
            )
        },
        "/v1/dead-letters/{letter_id}/discard": {
            "post": _op(
                "Discard a dead letter (operator)",
                "dead letters",
                "admin",
                {
                    "200": _json("DeadLetterOut", "Discarded"),
                    "409": _problem("The dead letter was replayed or discarded already"),
                    **_problems(404, 415, 422),
                },
                parameters=[LETTER],
                body=_body("DiscardDeadLetter", required=False),
                operation_id="discardDeadLetter",
            )
        },
    }
    for item in routes.values():
        for op in item.values():
            op["responses"].setdefault("500", _problem("Unexpected error (no details are given)"))
    return routes


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
