"""What the runtime reads and returns: instances, events addressed to them, outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from engine.decide import Rejection


class InstanceStatus(StrEnum):
    ACTIVE = "active"
    RETRYING = "retrying"  # a step failed; a timer fires its next attempt (engine.retries)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Instance:
    """One workflow instance as stored."""

    id: uuid.UUID
    workflow: str
    version: int
    business_key: str
    state: str
    data: Mapping[str, Any]
    status: InstanceStatus
    revision: int
    created_at: datetime
    updated_at: datetime
    state_entered_at: datetime
    error: Mapping[str, Any] | None = None

    def to_json(
        self, sla_due_at: datetime | None = None, sla_breached: bool = False
    ) -> dict[str, Any]:
        """As the API shows it; the SLA fields come from the definition
        (:mod:`engine.slas`)."""
        return {
            "id": str(self.id),
            "workflow": self.workflow,
            "version": self.version,
            "business_key": self.business_key,
            "state": self.state,
            "status": self.status.value,
            "data": self.data,
            "revision": self.revision,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "state_entered_at": self.state_entered_at.isoformat(),
            "sla_due_at": None if sla_due_at is None else sla_due_at.isoformat(),
            "sla_breached": sla_breached,
            "error": self.error,
        }


Source = Literal["http", "kafka", "timer", "operator", "api"]


@dataclass(frozen=True, slots=True)
class Event:
    """An event for one instance, addressed by id or by (workflow, business key).

    ``event_id`` makes delivery idempotent: the second delivery of an id has no effect.
    """

    type: str
    event_id: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    instance_id: uuid.UUID | None = None
    workflow: str | None = None
    business_key: str | None = None
    source: Source = "api"
    request_id: str | None = None

    def __post_init__(self) -> None:
        if self.instance_id is None and (self.workflow is None or self.business_key is None):
            raise ValueError("an Event needs instance_id, or workflow and business_key")


@dataclass(frozen=True, slots=True)
class TimerFiring:
    """A due timer, claimed by the scheduler; its id is the event id (once in effect)."""

    timer_id: uuid.UUID
    instance_id: uuid.UUID
    name: str
    state: str

    @property
    def event_id(self) -> str:
        return str(self.timer_id)


InstanceTrigger = Event | TimerFiring
"""What the runtime applies to an instance: an event, or one of its timers firing. (The
pure step's own view of it is :data:`engine.decide.Trigger`.)"""

OutcomeStatus = Literal[
    "applied",  # the transition was taken and committed
    "rejected",  # the state machine refused it (recorded in history)
    "duplicate",  # this event id was processed before: no effect
    "not_found",  # no such instance
    "stale",  # a timer that was cancelled or already fired
    "failed",  # an action raised; after the retry policy, the instance is marked failed
    "retrying",  # an action raised; the instance is retrying and a timer fires the next try
    "parked",  # the instance is retrying: the event waits, in order, for the retry
    "deferred",  # not attempted: an earlier event for the instance failed in this batch
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one event did."""

    event_id: str
    status: OutcomeStatus
    instance_id: uuid.UUID | None = None
    from_state: str | None = None
    to_state: str | None = None
    revision: int | None = None
    rejection: Rejection | None = None
    error: str | None = None
    instance: Instance | None = None
    """The instance as this event left it (applied or rejected), without another read."""


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    id: int
    instance_id: uuid.UUID
    revision: int
    event_id: str
    event_type: str
    source: str
    from_state: str | None
    to_state: str | None
    transition: str | None
    payload: Mapping[str, Any]
    outcome: str
    reason: str | None
    request_id: str | None
    occurred_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "revision": self.revision,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "source": self.source,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "transition": self.transition,
            "payload": self.payload,
            "outcome": self.outcome,
            "reason": self.reason,
            "request_id": self.request_id,
            "occurred_at": self.occurred_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class StartResult:
    instance: Instance
    created: bool


@dataclass(frozen=True, slots=True)
class Page:
    items: tuple[Instance, ...]
    next_cursor: str | None
