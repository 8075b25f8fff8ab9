"""Checking what clients send (start data, event payloads) before the pure step uses it.

A schema failure is a field error; so is a number the engine can neither compute with nor
store: decimals beyond :data:`MAX_DECIMAL_DIGITS` digits or 1e± :data:`MAX_DECIMAL_EXPONENT`,
floats that are not finite, integers beyond 64 bits. `engine.decide` re-exports
:func:`validate_input` and the limits.
"""

from __future__ import annotations

import decimal
import enum
import math
import re
import typing
import uuid
from collections.abc import Iterator, Mapping
from datetime import date, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ValidationError

from engine.decisions import FieldError

MAX_DECIMAL_DIGITS = 1000
"""Decimals a client sends (start data, event payloads) have at most this many digits."""
MAX_DECIMAL_EXPONENT = 1000
"""Nonzero client decimals lie between 1e-1000 and 1e+1000 in magnitude: far beyond any
amount or quantity, and far from where decimal arithmetic overflows (1e+999999), so sums
and products of them stay in range. Anything beyond is a field error, like a failed
schema (see :func:`validate_input`)."""
INT64 = 2**63


def validate_input(
    schema: type[BaseModel], value: Mapping[str, Any]
) -> BaseModel | tuple[FieldError, ...]:
    """Validate what a client sent (start data, an event payload) against ``schema``.

    Field errors for what fails the schema; for numbers the engine can neither compute
    with nor store (decimals beyond :data:`MAX_DECIMAL_DIGITS` digits or 1e±
    :data:`MAX_DECIMAL_EXPONENT`, floats that are not finite, integers beyond 64 bits);
    and for a decimal error (overflow, invalid operation) that a validator of the
    schema raised computing with such numbers.
    """
    try:
        model = schema.model_validate(value)
    except ValidationError as error:
        return _field_errors(error)
    except decimal.DecimalException as error:
        culprit = next(_absurd_numbers_in_json(value, ""), None)
        return (
            culprit or FieldError("", f"a number is out of range: {decimal_error_name(error)}"),
        )
    if _sound(model):
        return model
    return tuple(_unsound_numbers(model, ""))


def decimal_error_name(error: decimal.DecimalException) -> str:
    """``InvalidOperation`` -> ``invalid operation``."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", type(error).__name__).lower()


def _sound(value: Any) -> bool:
    """Whether every number in ``value`` is in range: the fast check, on every start and
    every validated event, visiting only the fields that may hold numbers."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        in_range: bool = -INT64 <= value < INT64
        return in_range
    if kind is decimal.Decimal:
        return _decimal_problem(value) is None
    if kind is list or kind is tuple:
        return all(map(_sound, value))
    if kind is dict:
        return all(map(_sound, value.values()))
    if kind is float:
        return math.isfinite(value)
    if isinstance(value, BaseModel):
        for name in _numeric_fields(kind):
            if not _sound(getattr(value, name)):
                return False
        extra = value.__pydantic_extra__
        return not extra or _sound(extra)
    return next(_unsound_numbers(value, ""), None) is None  # sets, subclasses of int, ...


_NUMERIC_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {}
_NO_NUMBERS: tuple[type, ...] = (str, bytes, bool, enum.Enum, date, time, timedelta, uuid.UUID)


def _numeric_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` whose type may hold a number (computed once per class)."""
    found = _NUMERIC_FIELDS.get(model)
    if found is None:
        found = tuple(
            name
            for name, info in model.model_fields.items()
            if _may_hold_numbers(info.annotation, set())
        )
        _NUMERIC_FIELDS[model] = found
    return found


def _may_hold_numbers(annotation: Any, seen: set[type]) -> bool:
    if annotation is None or annotation is type(None) or annotation is Ellipsis:
        return False
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            if annotation in seen:  # a recursive model: its fields are being looked at
                return False
            seen.add(annotation)
            return annotation.model_config.get("extra") == "allow" or any(
                _may_hold_numbers(info.annotation, seen)
                for info in annotation.model_fields.values()
            )
        if issubclass(annotation, _NO_NUMBERS):  # datetime is a date
            return False
        if not typing.get_args(annotation):  # int, float, Decimal; any other class, to be safe
            return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return False
    arguments = typing.get_args(annotation)
    if origin is Annotated:
        return _may_hold_numbers(arguments[0], seen)
    if arguments:  # containers and unions
        return any(_may_hold_numbers(argument, seen) for argument in arguments)
    return True  # Any, a type variable, ...: anything


def _unsound_numbers(value: Any, path: str) -> Iterator[FieldError]:
    """Numbers in a validated model that are out of range (see :func:`validate_input`)."""
    if isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            yield from _unsound_numbers(getattr(value, name), _join(path, info.alias or name))
        extra = value.__pydantic_extra__
        if extra:
            for key, item in extra.items():
                yield from _unsound_numbers(item, _join(path, key))
    elif isinstance(value, str | bool) or value is None:
        return
    elif isinstance(value, decimal.Decimal):
        problem = _decimal_problem(value)
        if problem is not None:
            yield FieldError(path, problem)
    elif isinstance(value, int):
        if not -INT64 <= value < INT64:
            yield FieldError(path, "integers must fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield FieldError(path, "numbers must be finite")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _unsound_numbers(item, _join(path, str(key)))
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield from _unsound_numbers(item, _join(path, str(index)))


def _decimal_problem(value: decimal.Decimal) -> str | None:
    if not value.is_finite():
        return "numbers must be finite"
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if value.adjusted() - exponent >= MAX_DECIMAL_DIGITS:  # the digits there are, less one
        return f"numbers must have at most {MAX_DECIMAL_DIGITS} digits"
    if value and abs(value.adjusted()) > MAX_DECIMAL_EXPONENT:
        return (
            f"numbers must lie between 1e-{MAX_DECIMAL_EXPONENT} and 1e+{MAX_DECIMAL_EXPONENT}"
            " in magnitude"
        )
    return None


def _absurd_numbers_in_json(value: Any, path: str) -> Iterator[FieldError]:
    """Where a decimal error probably came from: numbers, or strings read as decimals, that
    are out of range (the schema has not said which strings are numbers)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _absurd_numbers_in_json(item, _join(path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _absurd_numbers_in_json(item, _join(path, str(index)))
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        if isinstance(value, str) and len(value) > 10_000:
            return
        try:
            number = decimal.Decimal(value)
        except (decimal.DecimalException, ValueError):
            return
        problem = _decimal_problem(number)
        if problem is not None:
            yield FieldError(path, problem)


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def _field_errors(error: ValidationError) -> tuple[FieldError, ...]:
    return tuple(
        FieldError(".".join(str(part) for part in item["loc"]), item["msg"])
        for item in error.errors(include_url=False)
    )


def first_unstorable(value: Any, path: str) -> tuple[str, str] | None:
    """The first part of a JSON value PostgreSQL's jsonb or the encoder cannot hold (a
    string with NUL, an integer beyond 64 bits, a number that is not finite), as (path,
    why); None when all of it can be stored."""
    if isinstance(value, str):
        return (path, "strings must not contain NUL (\\u0000)") if "\x00" in value else None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return (path, "numbers must be finite: this one is NaN, Infinity or beyond a 64-bit float")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if -INT64 <= value < INT64 else (path, "integers must fit in 64 bits")
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return (path, "keys must not contain NUL (\\u0000)")
            found = first_unstorable(item, f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = first_unstorable(item, f"{path}.{index}")
            if found is not None:
                return found
    return None
