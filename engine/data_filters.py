"""Business-data filters: ``data.customer_id=C-7`` query parameters as a JSONB document.

A filter names a field the workflow's ``data_schema`` declares (nested fields with dots:
``data.payment.provider``); its text is parsed as that field's type and written the way
the instance data stores it (pydantic's JSON mode), so that ``data @> {...}`` containment
matches numbers, booleans, decimals and dates alike. Pure.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from engine.errors import InvalidRequest
from engine.input_validation import first_unstorable

PREFIX = "data."
MAX_FILTERS = 20


def data_filter(schema: type[BaseModel], raw: Mapping[str, str]) -> dict[str, Any]:
    """``{"data.a.b": "text"}`` as ``{"a": {"b": value}}``; InvalidRequest naming each
    parameter that names no declared field, or whose value is not of the field's type."""
    if len(raw) > MAX_FILTERS:
        raise InvalidRequest(f"at most {MAX_FILTERS} data.* filters, got {len(raw)}")
    document: dict[str, Any] = {}
    problems: list[str] = []
    for name, text in raw.items():
        path = name.removeprefix(PREFIX).split(".")
        annotation = _field(schema, path)
        if annotation is None:
            problems.append(f"{name}: {schema.__name__} declares no field {'.'.join(path)!r}")
            continue
        try:
            value = _parse(annotation, text)
        except ValidationError as exc:
            message = exc.errors()[0]["msg"] if exc.errors() else str(exc)
            problems.append(f"{name}: {message}")
            continue
        unstorable = first_unstorable(value, name)
        if unstorable is not None:
            problems.append(f"{name}: {unstorable[1]}")
            continue
        node = document
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # data.a=1 and data.a.b=2 together
                problems.append(f"{name}: conflicts with another data filter")
                break
            node = child
        else:
            node[path[-1]] = value
    if problems:
        raise InvalidRequest("invalid query parameters: " + "; ".join(problems))
    return document


def _field(schema: type[BaseModel], path: list[str]) -> Any:
    """The annotation of the field at ``path`` (through nested models), or None."""
    annotation: Any = schema
    for part in path:
        model = _model_in(annotation)
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
    return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds (``Model``, ``Model | None``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if _model_in(a) is not None]
        if len(models) == 1:
            return _model_in(models[0])
    return None


def _parse(annotation: Any, text: str) -> Any:
    """``text`` as a value of ``annotation``, in its stored (JSON) form."""
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    if _model_in(annotation) is not None and text != "null":
        raise ValidationError.from_exception_data(
            "data filter",
            [{"type": "value_error", "loc": (), "input": text, "ctx": {"error": _NOT_LEAF}}],
        )
    try:
        value = adapter.validate_strings(text)
    except ValidationError:
        if text != "null":
            raise
        value = adapter.validate_python(None)
    return adapter.dump_python(value, mode="json")


_NOT_LEAF = ValueError("name a field inside it (data.<field>.<inner field>)")
