"""Parsing what clients send: JSON bodies, query strings, ids. Bad input is a clear 4xx.

A body must be JSON: its ``Content-Type`` is ``application/json`` or ``application/*+json``
(parameters allowed; a ``charset`` must be UTF-8), or absent, which is taken as JSON (HTTP
libraries given raw bytes send none). Any other type is a 415, whatever the body looks
like; note that ``curl -d`` sends ``application/x-www-form-urlencoded``: use ``curl --json``
or ``-H 'Content-Type: application/json'``. An empty body is never refused for its type.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar
from urllib.parse import unquote

from pydantic import BaseModel, ValidationError
from sanic import Request

from engine.decide import FieldError
from engine.errors import ConveyorError, InvalidRequest, PayloadInvalid

M = TypeVar("M", bound=BaseModel)

MAX_JSON_DEPTH = 200
"""How deep the JSON parser (pydantic's jiter) lets arrays and objects nest."""


class UnsupportedMediaType(ConveyorError):
    """A request body that is not JSON (by its Content-Type)."""

    status_code = 415
    title = "Unsupported media type"
    headers = {"Accept-Post": "application/json"}


def parse_body(request: Request, model: type[M], *, optional: bool = False) -> M:
    """The request body as ``model``: 415 when its Content-Type is not JSON, 400 when it is
    not JSON, 422 naming each bad field."""
    body = request.body
    if not body or not body.strip():
        if optional:
            return model()
        raise InvalidRequest("the request needs a JSON body")
    content_type: str | None = request.headers.get("content-type")
    if content_type is not None and not is_json_media_type(content_type):
        raise UnsupportedMediaType(
            f"the request body must be JSON (Content-Type: application/json), "
            f"not {content_type[:100]!r}"
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        for error in exc.errors():
            if error["type"] == "json_invalid":
                raise InvalidRequest(_json_problem(error["msg"])) from None
        raise PayloadInvalid("the request body is invalid", field_errors(exc)) from None


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/*+json``, any case, with parameters; a
    ``charset`` parameter must name UTF-8 (RFC 8259: JSON is UTF-8)."""
    media, _, parameters = content_type.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        return False
    if not parameters:
        return True
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


def _json_problem(message: str) -> str:
    """The parser's complaint, said plainly: too deep, or where the JSON breaks."""
    if "recursion limit" in message:
        return f"the request body is nested deeper than {MAX_JSON_DEPTH} levels"
    reason = message.removeprefix("Invalid JSON: ")
    return f"the request body is not valid JSON: {reason}"


def parse_query(request: Request, model: type[M], *, prefix: str | None = None) -> M:
    """Query parameters as ``model`` (last value wins); 400 naming each bad parameter, and
    each unknown one (models forbid extra fields). Parameters starting with ``prefix`` are
    left out, for the caller (see :func:`prefixed_query`)."""
    args = request.get_args(keep_blank_values=True)  # "?limit=" is invalid, not absent
    values: dict[str, Any] = {
        name: args.getlist(name)[-1]
        for name in args
        if prefix is None or not name.startswith(prefix)
    }
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{e.path}: {e.message}" for e in errors)
        raise BadQuery(f"invalid query parameters: {detail}", errors) from None


def prefixed_query(request: Request, prefix: str) -> dict[str, str]:
    """The query parameters whose names start with ``prefix`` (last value wins)."""
    args = request.get_args(keep_blank_values=True)
    return {name: args.getlist(name)[-1] for name in args if name.startswith(prefix)}


def path_segment(raw: str, what: str) -> str:
    """A path parameter percent-decoded (Sanic matches and hands over the raw segment, so
    that an encoded "/" stays inside it): 400 when the bytes it encodes are not UTF-8."""
    if "%" not in raw:
        return raw
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequest(f"the {what} in the path is not percent-encoded UTF-8") from None


def header_text(value: str, name: str) -> str:
    """A header value that must be text: 400 when it was not UTF-8 (Sanic hands such bytes
    over as surrogate escapes, which neither PostgreSQL nor JSON can hold)."""
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidRequest(f"the {name} header is not valid UTF-8") from None
    return value


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
