"""The pure parts of the operator actions (:mod:`engine.operations` is their I/O shell).

Whether an instance can be cancelled and by which route, the event a business cancel
runs as, the write set of a status-only cancel, and the whole decision of a manual move.
The runtime writes these to PostgreSQL; the test kit (:mod:`engine.testing`) applies the
same write sets in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from engine.decide import MOVE_EVENT, ActionFailed, Snapshot, move_decision
from engine.decisions import FieldError
from engine.declarations import CANCEL_EVENT
from engine.errors import CancelFailed, ConveyorError, InvalidState, PayloadInvalid, UnknownWorkflow
from engine.model import Event, Instance, InstanceStatus, Outcome
from engine.orphans import InstanceOrphaned, missing_definition, orphaned_message
from engine.registry import Registry
from engine.store.writeset import HistoryRow, InstanceUpdate, WriteSet
from engine.wire.topics import Topics

CANCELLED_WHILE_PARKED = (
    "the instance was cancelled while this event waited behind a retry; it was not applied"
)
MOVED_WHILE_PARKED = (
    "the instance was moved by an operator while this event waited behind a retry; it was "
    "not applied"
)


class MoveFailed(ConveyorError):
    """A hook the move was asked to run raised: the instance was not moved."""

    status_code = 409
    title = "Move hook failed"


# ---------------------------------------------------------------------------- cancel


CancelMode = Literal["transition", "status", "already"]


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What an operator's cancel did: ``transition`` (the workflow's cancel route ran, with
    its actions), ``status`` (no route applied: only the status changed) or ``already``
    (it was cancelled before; nothing changed)."""

    instance: Instance
    mode: CancelMode
    transition: str | None = None


def check_cancellable(instance: Instance) -> None:
    """Raise :class:`InvalidState` for a completed instance (it cannot be cancelled)."""
    if instance.status is InstanceStatus.COMPLETED:
        raise InvalidState(
            f"instance {instance.id} is completed in state '{instance.state}'; "
            "it cannot be cancelled"
        )


def cancel_event_id(instance: Instance) -> str:
    """The event id of an operator's cancel of ``instance`` (route or status)."""
    return f"cancel:{instance.id}:{instance.revision + 1}"


def has_cancel_route(registry: Registry, instance: Instance) -> bool:
    """Whether the instance's version declares an ``on_cancel`` route from its state; an
    instance of a version no longer deployed has none known (status-only cancel)."""
    try:
        spec = registry.get(instance.workflow, instance.version).spec
    except UnknownWorkflow:
        return False
    return (instance.state, CANCEL_EVENT) in spec.routes


def cancel_route_event(
    instance: Instance, event_id: str, reason: str, request_id: str | None
) -> Event:
    """The event ``conveyor.cancel`` the workflow's cancel route runs as."""
    return Event(
        CANCEL_EVENT,
        event_id,
        {"reason": reason},
        instance_id=instance.id,
        source="operator",
        request_id=request_id,
    )


def cancel_route_failed(instance: Instance, outcome: Outcome, failure: object) -> CancelFailed:
    """The error of a cancel route whose action raised (nothing was changed)."""
    return CancelFailed(
        f"the cancel route of {instance.workflow} v{instance.version} in state "
        f"'{instance.state}' failed ({outcome.error or failure}); nothing was "
        "changed. Fix the workflow, or cancel with status_only to set the status alone"
    )


def cancel_route_taken(registry: Registry, instance: Instance, after: Instance) -> str | None:
    """The name of the cancel transition that took ``instance`` to ``after``'s state."""
    routes = registry.get(instance.workflow, instance.version).spec.routes
    taken = [r for r in routes[(instance.state, CANCEL_EVENT)] if r.to_state == after.state]
    return taken[0].transition.name if taken else None


def cancel_status_writes(
    topics: Topics,
    instance: Instance,
    now: datetime,
    event_id: str,
    reason: str,
    request_id: str | None,
) -> tuple[WriteSet, int]:
    """A status-only cancel: the instance stays in its state, ``cancelled``; the write set
    and the new revision (the caller then refuses parked events and drops the timers)."""
    writes = WriteSet(now, topics)
    revision = writes.status_change(
        instance,
        status=InstanceStatus.CANCELLED.value,
        error=instance.error,
        event_id=event_id,
        event_type=CANCEL_EVENT,
        source="operator",
        payload={"reason": reason},
        outcome="cancelled",
        reason=reason or None,
        request_id=request_id,
        to_state=instance.state,
    )
    return writes, revision


# ---------------------------------------------------------------------------- retry


def check_retryable(registry: Registry, instance: Instance) -> Mapping[str, Any]:
    """The ``error`` of a failed or retrying instance an operator may retry; raises
    :class:`InvalidState` for another status, :class:`InstanceOrphaned` when the
    definition of its state is not loaded (its trigger would be refused)."""
    retryable = (InstanceStatus.FAILED, InstanceStatus.RETRYING)
    if instance.status not in retryable or instance.error is None:
        raise InvalidState(
            f"instance {instance.id} is {instance.status.value}; only failed or "
            "retrying instances can be retried"
        )
    missing = missing_definition(registry, instance.workflow, instance.version, instance.state)
    if missing is not None:  # its trigger would be refused, and its parked events with it
        message = orphaned_message(instance.workflow, instance.version, instance.state, missing)
        raise InstanceOrphaned(f"{message}; deploy it to retry the instance", missing)
    return instance.error


def retry_event_id(instance: Instance) -> str:
    """The id of the history entry of an operator's retry of ``instance``."""
    return f"retry:{instance.id}:{instance.revision + 1}"


RETRY_EVENT = "conveyor.retry"
"""The event type of an operator's retry in the history."""


# ---------------------------------------------------------------------------- move


async def move_writes(
    registry: Registry,
    topics: Topics,
    instance: Instance,
    now: datetime,
    *,
    state: str,
    reason: str = "",
    run_hooks: bool = False,
    request_id: str | None = None,
) -> tuple[WriteSet, int]:
    """An operator's move of ``instance`` into ``state`` (see
    :func:`engine.operations.move_locked`): the write set and the new revision. Raises
    :class:`InvalidState` for an ended instance or an undeployed version,
    :class:`PayloadInvalid` for an undeclared state, :class:`MoveFailed` when a hook
    raised. The caller then drops the instance's timers (before writing this, which sets
    the new state's) and refuses its parked events."""
    if instance.status in (InstanceStatus.COMPLETED, InstanceStatus.CANCELLED):
        raise InvalidState(
            f"instance {instance.id} is {instance.status.value} in state '{instance.state}'; "
            "an ended instance is not moved"
        )
    try:
        definition = registry.get(instance.workflow, instance.version)
    except UnknownWorkflow:
        raise InvalidState(
            f"{instance.workflow} v{instance.version} is not deployed here, so its states are "
            "unknown; deploy it to move the instance"
        ) from None
    spec = definition.spec
    if state not in spec.states:
        known = ", ".join(spec.states)
        raise PayloadInvalid(
            "the request body is invalid",
            [FieldError("state", f"{spec.label} declares no state {state!r}; its states: {known}")],
        )
    revision = instance.revision + 1
    event_id = f"move:{instance.id}:{revision}"
    snapshot = Snapshot(instance.state, instance.data, instance.revision)
    try:
        decision = await move_decision(
            definition, snapshot, state, event_id=event_id, now=now, run_hooks=run_hooks
        )
    except ActionFailed as failed:
        raise MoveFailed(
            f"the hooks of the move of instance {instance.id} from '{instance.state}' to "
            f"'{state}' failed ({type(failed.error).__name__}: {failed.error}); nothing was "
            "changed. Fix the workflow, or move without run_hooks"
        ) from failed
    status = decision.final_status
    writes = WriteSet(now, topics)
    error = None if status == "active" else instance.error
    writes.update(instance.id, InstanceUpdate(state, decision.data, status, revision, now, error))
    writes.history(
        HistoryRow(
            instance.id,
            revision,
            event_id,
            MOVE_EVENT,
            "operator",
            "moved",
            {"state": state, "reason": reason, "run_hooks": run_hooks},
            from_state=instance.state,
            to_state=state,
            reason=reason or None,
            request_id=request_id,
        )
    )
    writes.state_changed(
        instance,
        from_state=instance.state,
        to_state=state,
        status=status,
        revision=revision,
        event_id=event_id,
        event_type=MOVE_EVENT,
        request_id=request_id,
    )
    writes.queue_outbound(instance, decision.outbound, request_id)
    for timer in decision.timers_to_set:
        writes.set_timer(instance.id, event_id, timer)
    return writes, revision


__all__ = [
    "CANCELLED_WHILE_PARKED",
    "MOVED_WHILE_PARKED",
    "RETRY_EVENT",
    "CancelMode",
    "Cancelled",
    "MoveFailed",
    "cancel_event_id",
    "cancel_route_event",
    "cancel_route_failed",
    "cancel_route_taken",
    "cancel_status_writes",
    "check_cancellable",
    "check_retryable",
    "has_cancel_route",
    "move_writes",
    "retry_event_id",
]
