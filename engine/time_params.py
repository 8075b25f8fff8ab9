"""Date-time and duration values given as filters (query parameters of ``GET
/v1/instances``, a bulk job's filter, the CLI's ``name=value`` filters): pydantic types
that take ISO 8601 text only and refuse what PostgreSQL or Python's datetime cannot hold,
so that a bad value is a 400 naming it, never an error further down."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import PlainSerializer, PlainValidator, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

_DATE_TIME_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")

_DURATION = re.compile(
    r"P(?!$)(?:[0-9]+(?:\.[0-9]+)?W)?(?:[0-9]+(?:\.[0-9]+)?D)?"
    r"(?:T(?=[0-9])(?:[0-9]+(?:\.[0-9]+)?H)?(?:[0-9]+(?:\.[0-9]+)?M)?(?:[0-9]+(?:\.[0-9]+)?S)?)?"
)
MAX_DURATION = timedelta(days=36500)
"""The longest duration a filter takes (100 years)."""


def date_time(value: object) -> datetime:
    """An ISO 8601 / RFC 3339 date-time string (nothing else: no Unix times, no bare
    dates), as an aware datetime in UTC; without an offset it is taken as UTC. Refused
    when it leaves the datetime range once converted to UTC (``0001-01-01T00:00+14:00``)."""
    if not isinstance(value, str) or not _DATE_TIME_START.match(value):
        raise PydanticCustomError(
            "date_time_format", "must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z"
        )
    try:
        parsed = datetime.fromisoformat(value.upper())  # RFC 3339 allows "t" and "z"
    except ValueError:
        raise PydanticCustomError(
            "date_time_format", "must be a valid ISO 8601 date-time such as 2026-01-31T12:00:00Z"
        ) from None
    if parsed.utcoffset() is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "date_time_range", "is out of range once converted to UTC"
        ) from None


def duration(value: object) -> timedelta:
    """An ISO 8601 duration (``PT30M``, ``PT2H``, ``P1D``, ``P1DT12H``, ``P2W``; no years or
    months, whose length varies), positive and at most 100 years."""
    if not isinstance(value, str) or not _DURATION.fullmatch(value.upper()):
        raise PydanticCustomError(
            "duration_format", "must be an ISO 8601 duration such as PT2H, P1D or P1DT12H"
        )
    try:
        parsed = _DURATIONS.validate_python(value.upper())
    except ValidationError:
        raise PydanticCustomError("duration_format", "must be a valid ISO 8601 duration") from None
    if not timedelta(0) < parsed <= MAX_DURATION:
        raise PydanticCustomError("duration_range", "must be positive and at most 100 years")
    return parsed


_DATE_TIMES = TypeAdapter(datetime)
_DURATIONS = TypeAdapter(timedelta)

# Serialised as pydantic serialises the plain types (a plain validator alone makes it
# warn about its own output).
DateTimeParam = Annotated[
    datetime,
    PlainValidator(date_time, json_schema_input_type=str),
    PlainSerializer(lambda v: _DATE_TIMES.dump_python(v, mode="json"), when_used="json"),
]
"""A date-time filter: ISO 8601 only, aware, in range in UTC."""

DurationParam = Annotated[
    timedelta,
    PlainValidator(duration, json_schema_input_type=str),
    PlainSerializer(lambda v: _DURATIONS.dump_python(v, mode="json"), when_used="json"),
]
"""A duration filter: ISO 8601, positive, at most 100 years."""

__all__ = ["MAX_DURATION", "DateTimeParam", "DurationParam", "date_time", "duration"]
