"""HTML form fields generated from an event's payload JSON Schema, and the payload read
back from the submitted form.

The fields carry the schema's constraints as HTML attributes (``required``, ``pattern``,
``minlength``, ``min``, ``step``...), so the browser refuses input the schema would;
the server validates the payload again through the normal path. What a form cannot
express simply (nested objects, arrays, a schema without properties) is a JSON textarea.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from engine.decisions import FieldError

FieldKind = Literal["text", "number", "checkbox", "select", "json"]

PREFIX = "p."
"""Form field names are ``p.<property>``; other fields of the form are the page's own."""

DECIMAL_PATTERN = r"-?[0-9]+(\.[0-9]+)?"
UNSIGNED_DECIMAL_PATTERN = r"[0-9]+(\.[0-9]+)?"


@dataclass(frozen=True, slots=True)
class FormField:
    """One input of an event's form."""

    name: str
    """The payload property ("" for the raw JSON field)."""
    label: str
    kind: FieldKind
    required: bool
    attrs: dict[str, str] = field(default_factory=dict)
    """Extra HTML attributes (``pattern``, ``minlength``, ``min``, ``step``...)."""
    options: tuple[str, ...] = ()
    description: str | None = None
    default: str = ""
    decimal: bool = False
    """A decimal number given as a string (pydantic's ``Decimal``): sent as typed."""
    integer: bool = False
    choices: tuple[Any, ...] = ()
    """A select's values as the schema gives them (``options`` are their text)."""

    @property
    def input_name(self) -> str:
        return PREFIX + self.name


def form_fields(schema: Mapping[str, Any]) -> list[FormField]:
    """The fields of a payload schema's form, in the schema's property order."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    if not properties:
        return [
            FormField(
                "",
                "Payload (JSON object)",
                "json",
                False,
                {"placeholder": "{}"},
                description="Any fields, as a JSON object; empty sends {}.",
            )
        ]
    required = set(schema.get("required") or ())
    defs: Mapping[str, Any] = schema.get("$defs") or {}
    return [
        _field(name, _resolve(prop, defs), name in required, defs)
        for name, prop in properties.items()
    ]


def _resolve(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref.removeprefix("#/$defs/"), {})
        return {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def _field(
    name: str, prop: Mapping[str, Any], required: bool, defs: Mapping[str, Any]
) -> FormField:
    label = str(prop.get("title") or name)
    description = prop.get("description")
    default = prop.get("default")
    shown_default = "" if default is None else _shown(default)
    variants = [_resolve(v, defs) for v in prop.get("anyOf") or ()]
    if variants:
        # Optional[X] is anyOf [X, null]; a Decimal is anyOf [number, string].
        concrete = [v for v in variants if v.get("type") != "null"]
        types = {v.get("type") for v in concrete}
        if types == {"number", "string"} or types == {"integer", "string"}:
            number = next(v for v in concrete if v.get("type") in ("number", "integer"))
            unsigned = _at_least_zero(number)
            attrs = {
                "pattern": UNSIGNED_DECIMAL_PATTERN if unsigned else DECIMAL_PATTERN,
                "inputmode": "decimal",
                "title": "a decimal number, e.g. 12.50",
            }
            return FormField(
                name, label, "text", required, attrs, (), description, shown_default, True
            )
        if len(concrete) == 1:
            merged = {**concrete[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
            return _field(name, merged, required, defs)
        return FormField(name, label, "json", required, {}, (), description, shown_default)
    if "enum" in prop:
        choices = tuple(prop["enum"])
        options = tuple(_shown(v) for v in choices)
        return FormField(
            name,
            label,
            "select",
            required,
            {},
            options,
            description,
            shown_default,
            choices=choices,
        )
    kind = prop.get("type")
    if kind == "string":
        attrs = {}
        pattern = _html_pattern(prop.get("pattern"))
        if pattern is not None:
            attrs["pattern"] = pattern
            attrs["title"] = f"must match {prop['pattern']}"
        for key, attr in (("minLength", "minlength"), ("maxLength", "maxlength")):
            if key in prop:
                attrs[attr] = str(prop[key])
        if prop.get("format") == "date-time":
            attrs["placeholder"] = "2026-01-31T12:00:00Z"
        return FormField(name, label, "text", required, attrs, (), description, shown_default)
    if kind in ("integer", "number"):
        attrs = {"step": "1" if kind == "integer" else "any"}
        for key, attr in (("minimum", "min"), ("maximum", "max")):
            if key in prop:
                attrs[attr] = _shown(prop[key])
        if "exclusiveMinimum" in prop and kind == "integer":
            attrs["min"] = _shown(int(prop["exclusiveMinimum"]) + 1)
        if "exclusiveMaximum" in prop and kind == "integer":
            attrs["max"] = _shown(int(prop["exclusiveMaximum"]) - 1)
        return FormField(
            name,
            label,
            "number",
            required,
            attrs,
            (),
            description,
            shown_default,
            integer=kind == "integer",
        )
    if kind == "boolean":
        # An unticked box sends nothing: "required" would force it on.
        return FormField(name, label, "checkbox", False, {}, (), description, shown_default)
    return FormField(name, label, "json", required, {}, (), description, shown_default)


def _html_pattern(pattern: object) -> str | None:
    """The schema's pattern as an HTML ``pattern`` attribute, when they mean the same.

    A schema pattern matches anywhere unless anchored; HTML's must match the whole value
    (the browser wraps it in ``^(?:...)$``). So only a pattern anchored at both ends with
    no top-level alternative is carried over; the server checks the others."""
    if not isinstance(pattern, str) or not pattern.startswith("^") or not pattern.endswith("$"):
        return None
    inner = pattern[1:-1]
    if "|" in inner or inner.endswith("\\"):
        return None
    return inner


def _at_least_zero(prop: Mapping[str, Any]) -> bool:
    low = prop.get("minimum", prop.get("exclusiveMinimum"))
    return isinstance(low, int | float) and low >= 0


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def payload_from_form(
    fields: list[FormField], form: Mapping[str, str]
) -> tuple[dict[str, Any], list[FieldError]]:
    """The payload the form describes; JSON fields that do not parse are field errors.

    Values are converted as the schema says where they can be; one that cannot (a number
    field given letters, by a client that skips the browser's checks) is sent as typed,
    for the workflow's own validation to refuse by name. An empty optional field is left
    out (its default applies)."""
    payload: dict[str, Any] = {}
    errors: list[FieldError] = []
    for spec in fields:
        raw = form.get(spec.input_name)
        if spec.kind == "checkbox":
            payload[spec.name] = raw is not None
            continue
        if raw is None or raw.strip() == "":
            continue
        if spec.kind == "json":
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                errors.append(FieldError(spec.name, f"not valid JSON: {error}"))
                continue
            if spec.name == "":
                if not isinstance(value, dict):
                    errors.append(FieldError("", "must be a JSON object"))
                    continue
                payload.update(value)
            else:
                payload[spec.name] = value
        elif spec.kind == "select" and raw in spec.options:
            payload[spec.name] = spec.choices[spec.options.index(raw)]
        elif spec.kind == "number":
            payload[spec.name] = _number(raw.strip(), spec.integer)
        else:
            payload[spec.name] = raw
    return payload, errors


def _number(text: str, integer: bool) -> int | float | str:
    try:
        return int(text) if integer else float(text)
    except ValueError:
        return text


__all__ = ["PREFIX", "FormField", "form_fields", "payload_from_form"]
