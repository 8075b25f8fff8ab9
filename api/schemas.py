"""Request and response bodies of the HTTP API, as pydantic models.

Request models validate what clients send (strict types, no unknown fields); response
models exist to document answers in the OpenAPI document, which the tests check every
answer against.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError

from engine.model import InstanceStatus

NO_NUL = r"^[^\x00]*$"
"""PostgreSQL text cannot hold NUL characters."""

DIGITS = r"^[0-9]{1,19}$"
"""A non-negative integer written in decimal digits (a history id)."""
_DIGITS = re.compile(r"[0-9]{1,19}")
_DATE_TIME_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _date_time(value: object) -> datetime:
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


DateTimeParam = Annotated[datetime, PlainValidator(_date_time)]
"""A date-time query parameter: ISO 8601 only, aware, in range in UTC."""


def _digits(value: object) -> object:
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise PydanticCustomError("digits", "must be a string of decimal digits")
    return value


DigitsParam = Annotated[int, BeforeValidator(_digits)]
"""An integer query parameter written as digits only (no sign, spaces, "_" or decimals)."""


class RequestBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StartInstance(RequestBody):
    """Start a workflow instance."""

    business_key: str = Field(
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="Unique per workflow, e.g. an order id.",
    )
    data: dict[str, Any] = Field(description="Instance data; must satisfy the data schema.")
    version: int | None = Field(
        None, ge=1, le=2**31 - 1, description="Workflow version; default: the latest registered."
    )


class SendEvent(RequestBody):
    """An event for an instance; ``id`` makes delivery idempotent."""

    type: str = Field(
        min_length=1, max_length=200, pattern=NO_NUL, description="Event type, e.g. order.packed."
    )
    payload: dict[str, Any] = Field(default_factory=dict, description="Event payload.")
    id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="Event id; else the Idempotency-Key header; else generated.",
    )


class CancelInstance(RequestBody):
    reason: str = Field(
        "", max_length=1000, pattern=NO_NUL, description="Why; recorded in the history."
    )


class InstanceQuery(BaseModel):
    """Query parameters of ``GET /v1/instances``."""

    model_config = ConfigDict(extra="ignore")

    workflow: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    state: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    status: InstanceStatus | None = None
    business_key_prefix: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    created_after: DateTimeParam | None = None
    created_before: DateTimeParam | None = None
    updated_after: DateTimeParam | None = None
    updated_before: DateTimeParam | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, min_length=1, max_length=500, pattern=NO_NUL)


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    cursor: DigitsParam = Field(
        0,
        ge=0,
        le=2**63 - 1,
        description="The id of the last history entry already seen, as a string of digits "
        "(the previous page's next_cursor).",
    )
    limit: int = Field(100, ge=1, le=1000)


class VersionQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: int | None = Field(None, ge=1, le=2**31 - 1)


# ---------------------------------------------------------------- responses (documentation)


class InstanceOut(BaseModel):
    id: str = Field(json_schema_extra={"format": "uuid"})
    workflow: str
    version: int
    business_key: str
    state: str
    status: InstanceStatus
    data: dict[str, Any]
    revision: int
    created_at: datetime
    updated_at: datetime
    state_entered_at: datetime
    error: dict[str, Any] | None


class InstancePage(BaseModel):
    items: list[InstanceOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class HistoryRecordOut(BaseModel):
    id: int
    revision: int
    event_id: str
    event_type: str
    source: str
    from_state: str | None
    to_state: str | None
    transition: str | None
    payload: dict[str, Any]
    outcome: str
    reason: str | None
    request_id: str | None
    occurred_at: datetime


class HistoryPage(BaseModel):
    items: list[HistoryRecordOut]
    next_cursor: str | None = Field(description="The last id of this page, when more may follow.")


class OutcomeOut(BaseModel):
    event_id: str
    status: Literal["applied", "duplicate", "failed", "rejected", "retrying", "parked"]
    original_status: str | None = Field(
        description="For a duplicate: what the first delivery of this event id did."
    )
    from_state: str | None
    to_state: str | None
    revision: int | None
    error: str | None


class EventResult(BaseModel):
    outcome: OutcomeOut
    instance: InstanceOut


class WorkflowSummary(BaseModel):
    name: str
    description: str | None
    latest_version: int
    versions: list[int]
    start_event: str | None


class WorkflowList(BaseModel):
    items: list[WorkflowSummary]


class FieldErrorOut(BaseModel):
    path: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem; some problems add members (errors, allowed_events, ...)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldErrorOut] | None = None
    allowed_events: list[str] | None = None
    state: str | None = None


class WorkflowDetail(BaseModel):
    """``engine.introspect.describe`` of one version, plus the registered versions."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: int
    versions: list[int]
    description: str | None
    initial_state: str
    start_event: str | None
    states: list[dict[str, Any]]
    transitions: list[dict[str, Any]]
    events: dict[str, dict[str, Any]]
    data_schema: dict[str, Any]
    timers: list[dict[str, Any]]
