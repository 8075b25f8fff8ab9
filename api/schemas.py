"""Request and response bodies of the HTTP API, as pydantic models.

Request models validate what clients send (strict types, no unknown fields); response
models exist to document answers in the OpenAPI document, which the tests check every
answer against.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)
from pydantic_core import PydanticCustomError

from engine.model import InstanceStatus
from engine.time_params import DateTimeParam, DurationParam

NO_NUL = r"^[^\x00]*$"
"""PostgreSQL text cannot hold NUL characters."""

DIGITS = r"^[0-9]{1,19}$"
"""A non-negative integer written in decimal digits (a history id)."""
_DIGITS = re.compile(r"[0-9]{1,19}")


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
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="Event type, e.g. order.packed (types starting with conveyor. are reserved: "
        "cancel with POST /v1/instances/{instance_id}/cancel).",
    )
    payload: dict[str, Any] = Field(default_factory=dict, description="Event payload.")

    @field_validator("type")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.startswith("conveyor."):
            raise ValueError(
                "types starting with conveyor. are reserved; cancel an instance with "
                "POST /v1/instances/{instance_id}/cancel"
            )
        return value

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
    status_only: bool = Field(
        False,
        description="Skip the workflow's cancel route (its compensating actions): only set "
        "the status to cancelled.",
    )


class InstanceQuery(BaseModel):
    """Query parameters of ``GET /v1/instances``."""

    model_config = ConfigDict(extra="forbid")

    workflow: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    version: int | None = Field(None, ge=1, le=2**31 - 1)
    state: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    status: InstanceStatus | None = None
    business_key_prefix: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    in_state_longer_than: DurationParam | None = Field(
        None, description="ISO 8601 duration, e.g. PT2H or P1D: running instances only."
    )
    sla_breached: bool | None = None
    created_after: DateTimeParam | None = None
    created_before: DateTimeParam | None = None
    updated_after: DateTimeParam | None = None
    updated_before: DateTimeParam | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, min_length=1, max_length=500, pattern=NO_NUL)


class MoveInstance(RequestBody):
    state: str = Field(
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="A state the instance's version declares.",
    )
    reason: str = Field(
        "", max_length=1000, pattern=NO_NUL, description="Why; recorded in the history."
    )
    run_hooks: bool = Field(
        False,
        description="Run the on-exit hooks of the current state, then the on-enter hooks of "
        "the new one (their data changes are kept, their messages sent); a hook that raises "
        "refuses the move (409).",
    )


class StatsQuery(BaseModel):
    """Query parameters of ``GET /v1/stats``."""

    model_config = ConfigDict(extra="forbid")

    workflow: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)


class NoQuery(BaseModel):
    """A route that takes no query parameters: any is a 400."""

    model_config = ConfigDict(extra="forbid")


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cursor: DigitsParam = Field(
        0,
        ge=0,
        le=2**63 - 1,
        description="The id of the last history entry already seen, as a string of digits "
        "(the previous page's next_cursor).",
    )
    limit: int = Field(100, ge=1, le=1000)


class VersionQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    sla_due_at: datetime | None = Field(
        description="When the instance should leave its state by (its state's SLA), if any."
    )
    sla_breached: bool = Field(description="Still in its state past sla_due_at.")
    error: dict[str, Any] | None


class CancelResult(BaseModel):
    mode: Literal["transition", "status", "already"] = Field(
        description="transition: the workflow's cancel route ran (with its compensating "
        "actions); status: no route applied, only the status changed; already: it was "
        "cancelled before."
    )
    transition: str | None = Field(description="The cancel route taken (mode transition).")
    instance: InstanceOut


class TimerOut(BaseModel):
    name: str
    state: str
    due_at: datetime
    overdue_seconds: float = Field(description="How long past due_at it is (0 if not due).")
    kind: Literal["timer", "retry"]


class TimerList(BaseModel):
    items: list[TimerOut]


class StateStats(BaseModel):
    state: str
    total: int
    by_status: dict[str, int]
    oldest_state_entered_at: datetime | None = Field(
        description="The earliest time a running (active, retrying, failed) instance entered it."
    )
    sla_seconds: float | None
    sla_breached: int = Field(description="Running instances here past the state's SLA.")


class WorkflowStats(BaseModel):
    workflow: str
    version: int
    total: int
    by_status: dict[str, int]
    sla_breached: int
    states: list[StateStats]


class Stats(BaseModel):
    as_of: datetime
    workflows: list[WorkflowStats]


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


# ---------------------------------------------------------------- dead letters

DeadLetterStatusParam = Literal["pending", "replayed", "discarded"]


class DeadLetterQuery(BaseModel):
    """Query parameters of ``GET /v1/dead-letters``; unknown ones are refused."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    topic: str | None = Field(None, min_length=1, max_length=300, pattern=NO_NUL)
    workflow: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    business_key: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    status: DeadLetterStatusParam | None = None
    since: DateTimeParam | None = None
    until: DateTimeParam | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: DigitsParam | None = Field(
        None,
        ge=1,
        le=2**63 - 1,
        description="The previous page's next_cursor (the last id it showed).",
    )


class ReplayDeadLetter(RequestBody):
    """How to replay a dead letter: as stored (an empty body), with a whole corrected
    CloudEvent (``value``), or with only its ``data`` corrected; with the same CloudEvent
    id unless ``new_id``."""

    value: dict[str, Any] | None = Field(
        None,
        description="A corrected CloudEvent (structured mode: specversion, id, source, type, "
        "subject, data, ...), replacing the stored message.",
    )
    data: dict[str, Any] | None = Field(
        None,
        description="The corrected data of the stored CloudEvent (its other attributes stay); "
        "not together with value.",
    )
    new_id: bool = Field(False, description="Replay under a new CloudEvent id.")


class DiscardDeadLetter(RequestBody):
    reason: str = Field("", max_length=1000, pattern=NO_NUL, description="Why; kept with it.")


HeaderPart = str | dict[str, str]


class DeadLetterSummaryOut(BaseModel):
    id: int
    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    event_id: str | None
    event_type: str | None
    workflow: str | None
    business_key: str | None
    instance_id: str | None = Field(json_schema_extra={"format": "uuid"})
    first_seen_at: datetime
    last_seen_at: datetime
    seen_count: int
    status: DeadLetterStatusParam
    resolved_at: datetime | None


class DeadLetterOut(DeadLetterSummaryOut):
    """A dead letter with its message and what happened to it."""

    key: str | None
    key_encoding: str | None = Field(description="utf-8 (the key as text) or base64")
    headers: list[list[HeaderPart]] = Field(
        description='[name, value] pairs; a part is text, or {"base64": ...} when its bytes '
        "are not UTF-8 (or hold NUL)."
    )
    value: str | None
    value_encoding: str | None = Field(description="utf-8 (the value as text) or base64")
    resolved_by: str | None = Field(description="The request id of the replay or discard.")
    resolution: dict[str, Any] | None = Field(
        description="What the replay did (status, instance_id, from_state, to_state, "
        "outcomes) or why it was discarded; failed replays in attempts."
    )


class DeadLetterPage(BaseModel):
    items: list[DeadLetterSummaryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


DEAD_LETTER_MODELS: tuple[type[BaseModel], ...] = (
    ReplayDeadLetter,
    DiscardDeadLetter,
    DeadLetterOut,
    DeadLetterPage,
)
