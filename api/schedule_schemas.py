"""Response bodies and queries of the schedule routes (``/v1/schedules``), as pydantic
models (the OpenAPI document takes their schemas from here)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TickOutcomeOut = Literal["started", "existing", "conflict", "published", "skipped", "failed"]


class ScheduleOut(BaseModel):
    """A declared schedule and where it stands."""

    name: str
    description: str
    cron: str | None = Field(description="Five cron fields, read in `timezone`'s wall clock.")
    every_seconds: float | None = Field(description="The interval, for interval schedules.")
    timezone: str
    target: str = Field(description="What a tick does: `start WORKFLOW` or `publish TYPE`.")
    workflow: str | None
    event_type: str | None
    missed: Literal["latest", "all", "skip"]
    paused: bool
    next_tick: datetime | None = Field(description="When it fires next (UTC).")
    last_tick: datetime | None = Field(description="The last scheduled tick fired.")
    last_outcome: TickOutcomeOut | None
    last_fired_at: datetime | None


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


class TickOut(BaseModel):
    """One tick: fired (or skipped by the missed-tick policy), and what it did."""

    schedule: str
    tick_id: str = Field(description="The schedule's name and the tick's time (or manual id).")
    tick: datetime
    manual: bool
    fired_at: datetime
    outcome: TickOutcomeOut
    instance_id: str | None
    message_id: str | None
    business_key: str | None
    detail: str | None
    lateness_seconds: float = Field(description="How long after its time the tick fired.")
    request_id: str | None


class TickPage(BaseModel):
    items: list[TickOut]
    next_cursor: str | None


class TicksQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=1000)
    cursor: str | None = Field(None, min_length=1, max_length=200)


SCHEDULE_MODELS: tuple[type[BaseModel], ...] = (ScheduleList, ScheduleOut, TickOut, TickPage)
