"""What the pure step takes and gives: snapshots, triggers, decisions and rejections.

The values of `engine.decide` (which re-exports them all): a `Snapshot` and a `Trigger` go
in; a `Decision` (the new state, data, outbound messages, timers and history entry the
runtime persists) or a `Rejection` (an expected refusal, with the `FieldError`s of a bad
payload) comes out; `ActionFailed` is raised when a guard, action or hook raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from engine.declarations import RetryPolicy
from engine.errors import ConveyorError


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The persisted state of one instance, as the pure step needs it."""

    state: str
    data: Mapping[str, Any]
    revision: int


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """An event delivered to an instance (from the API or Kafka)."""

    event_id: str
    type: str
    payload: Mapping[str, Any]
    source: str = "api"


@dataclass(frozen=True, slots=True)
class TimerTrigger:
    """A due timer; ``state`` is the state that set it (stale if the instance moved on)."""

    event_id: str
    timer_name: str
    state: str


Trigger = EventTrigger | TimerTrigger


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """An event or command to publish; ``topic=None`` means the runtime's default topic."""

    message_id: str
    kind: Literal["event", "command"]
    type: str
    payload: Mapping[str, Any]
    topic: str | None


@dataclass(frozen=True, slots=True)
class TimerToSet:
    """Fire timer ``name`` of ``state`` at ``due_at``, triggering transition ``trigger``."""

    name: str
    state: str
    due_at: datetime
    trigger: str


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One accepted trigger, as recorded in the instance history."""

    event_id: str
    trigger_type: Literal["event", "timer", "start"]
    event_type: str  # the event type, or the timer name
    from_state: str
    to_state: str
    transition: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    """An accepted trigger: what the runtime must persist and publish."""

    from_state: str  # "" for a newly started instance
    to_state: str
    data: Mapping[str, Any]
    outbound: tuple[OutboundMessage, ...]
    timers_to_set: tuple[TimerToSet, ...]
    timers_to_cancel: tuple[str, ...]  # cancel these first, then set timers_to_set
    history: HistoryEntry
    finished: bool
    transition: str
    retry: RetryPolicy
    cancelled: bool = False  # finished in a cancelled state: the instance ends ``cancelled``

    @property
    def final_status(self) -> str:
        """The instance's status after this decision."""
        if not self.finished:
            return "active"
        return "cancelled" if self.cancelled else "completed"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One payload validation problem; ``path`` looks like ``items.0.sku``."""

    path: str
    message: str


RejectionReason = Literal[
    "not_allowed",
    "guard_refused",
    "invalid_payload",
    "unknown_event",
    "stale_timer",
    "finished",
    "inactive",  # set by the runtime: the instance is cancelled or failed
    "orphaned",  # set by the runtime: its workflow, version or state is not loaded
]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A trigger the instance does not accept; nothing changes."""

    reason: RejectionReason
    message: str
    allowed_events: tuple[str, ...]
    field_errors: tuple[FieldError, ...]
    event_id: str
    event_type: str
    state: str
    missing: str | None = None  # orphaned: "workflow", "version" or "state"


class ActionFailed(ConveyorError):
    """A guard, action or hook raised; the original exception is ``__cause__``.

    The runtime retries the step following ``retry`` (the transition's policy); the worker
    never retries a batch for it (see :func:`engine.transient.is_transient`).
    """

    title = "Workflow action failed"

    def __init__(
        self, workflow: str, transition: str, state: str, retry: RetryPolicy, error: Exception
    ) -> None:
        super().__init__(
            f"{workflow}: transition '{transition}' failed in state '{state}': "
            f"{type(error).__name__}: {error}"
        )
        self.workflow = workflow
        self.transition = transition
        self.state = state
        self.retry = retry
        self.error = error
