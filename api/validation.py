"""Parsing what clients send: JSON bodies, query strings, ids. Bad input is a clear 4xx."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sanic import Request

from engine.decide import FieldError
from engine.errors import InvalidRequest, PayloadInvalid

M = TypeVar("M", bound=BaseModel)


def parse_body(request: Request, model: type[M], *, optional: bool = False) -> M:
    """The request body as ``model``: 400 when it is not JSON, 422 naming each bad field."""
    body = request.body
    if not body or not body.strip():
        if optional:
            return model()
        raise InvalidRequest("the request needs a JSON body")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidRequest("the request body is not valid JSON") from None
        raise PayloadInvalid("the request body is invalid", field_errors(exc)) from None


def parse_query(request: Request, model: type[M]) -> M:
    """Query parameters as ``model`` (last value wins); 400 naming each bad parameter."""
    args = request.get_args(keep_blank_values=True)  # "?limit=" is invalid, not absent
    values: dict[str, Any] = {name: args.getlist(name)[-1] for name in args}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{e.path}: {e.message}" for e in errors)
        raise BadQuery(f"invalid query parameters: {detail}", errors) from None


def parse_uuid(value: str, what: str = "instance id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidRequest(f"{what} {value[:80]!r} is not a UUID") from None


def field_errors(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(".".join(str(part) for part in e["loc"]) or "(body)", e["msg"])
        for e in exc.errors()
    ]


class BadQuery(PayloadInvalid):
    """Invalid query parameters: a 400 that names each parameter."""

    status_code = 400
    title = "Invalid query parameters"
