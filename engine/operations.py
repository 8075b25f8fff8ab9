"""Operator actions: cancel (the workflow's business cancel where it declares one), retry,
and move (put an instance into another declared state by hand).

Functions over a :class:`~engine.runtime.Runtime`: operator actions sit above the
runtime (the HTTP API calls them with its runtime) and use only its public surface. Each is
one transaction that locks the instance, changes its status, and records the change in
its history and on the ``state_changed`` topic. (Failing and retrying after a failure are
:mod:`engine.retries`.)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import asyncpg

from engine import retries
from engine.decide import MOVE_EVENT, ActionFailed, Snapshot, move_decision
from engine.decisions import FieldError
from engine.declarations import CANCEL_EVENT
from engine.errors import (
    CancelFailed,
    ConveyorError,
    InstanceNotFound,
    InvalidState,
    PayloadInvalid,
    UnknownWorkflow,
)
from engine.model import Event, Instance, InstanceStatus, Outcome
from engine.orphans import InstanceOrphaned, missing_definition, orphaned_message
from engine.runtime import Runtime
from engine.store import inbox, timers
from engine.store import statements as sql
from engine.store.database import driver_transaction
from engine.store.queries import instance_from_row
from engine.store.writeset import HistoryRow, InstanceUpdate, WriteSet

CANCELLED_WHILE_PARKED = (
    "the instance was cancelled while this event waited behind a retry; it was not applied"
)


CancelMode = Literal["transition", "status", "already"]


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What an operator's cancel did: ``transition`` (the workflow's cancel route ran, with
    its actions), ``status`` (no route applied: only the status changed) or ``already``
    (it was cancelled before; nothing changed)."""

    instance: Instance
    mode: CancelMode
    transition: str | None = None


async def cancel(
    runtime: Runtime,
    instance_id: uuid.UUID,
    *,
    reason: str = "",
    request_id: str | None = None,
    status_only: bool = False,
) -> Cancelled:
    """Cancel an active, retrying or failed instance, in one transaction: see
    :func:`cancel_locked`."""
    async with driver_transaction(runtime.db) as conn:
        rows = await conn.fetch(sql.LOCK_INSTANCES, [instance_id])
        if not rows:
            raise InstanceNotFound(f"no instance {instance_id}")
        return await cancel_locked(
            runtime,
            conn,
            instance_from_row(rows[0]),
            reason=reason,
            request_id=request_id,
            status_only=status_only,
        )


async def cancel_locked(
    runtime: Runtime,
    conn: asyncpg.Connection,
    instance: Instance,
    *,
    reason: str = "",
    request_id: str | None = None,
    status_only: bool = False,
) -> Cancelled:
    """Cancel ``instance``, locked by the caller's transaction on ``conn``.

    The business cancel first: where the workflow declares an ``on_cancel`` route from the
    instance's state, it runs as the event ``conveyor.cancel`` (guards, actions such as a
    refund command, hooks, timers) and the instance ends in the route's final state, with
    the status that state gives (``cancelled`` for a ``State(cancelled=True)``). A failed or
    retrying instance takes the route too. Only where no route applies (or with
    ``status_only``) does the status alone become ``cancelled``, in the state it was in.
    Either way its timers go, events parked behind a retry are refused, and its history
    says who and why. A route whose action raises cancels nothing (:class:`CancelFailed`).
    """
    if instance.status is InstanceStatus.CANCELLED:
        return Cancelled(instance, "already")
    if instance.status is InstanceStatus.COMPLETED:
        raise InvalidState(
            f"instance {instance.id} is completed in state '{instance.state}'; "
            "it cannot be cancelled"
        )
    event_id = f"cancel:{instance.id}:{instance.revision + 1}"
    if not status_only and _has_cancel_route(runtime, instance):
        cancelled = await _cancel_route(runtime, conn, instance, event_id, reason, request_id)
        if cancelled is not None:
            return cancelled
    writes = WriteSet(runtime.clock(), runtime.topics)
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
    await retries.refuse_parked(conn, writes, instance, revision, CANCELLED_WHILE_PARKED)
    await writes.write(conn)
    await timers.delete(conn, instance.id)
    row = await conn.fetchrow(sql.GET_INSTANCE, instance.id)
    return Cancelled(instance_from_row(row), "status")


def _has_cancel_route(runtime: Runtime, instance: Instance) -> bool:
    """Whether the instance's version declares an ``on_cancel`` route from its state; an
    instance of a version no longer deployed has none known (status-only cancel)."""
    try:
        spec = runtime.registry.get(instance.workflow, instance.version).spec
    except UnknownWorkflow:
        return False
    return (instance.state, CANCEL_EVENT) in spec.routes


async def _cancel_route(
    runtime: Runtime,
    conn: asyncpg.Connection,
    instance: Instance,
    event_id: str,
    reason: str,
    request_id: str | None,
) -> Cancelled | None:
    """Run the workflow's cancel route; None when its guards refuse (no route applies)."""
    if instance.status is not InstanceStatus.ACTIVE:
        # The operator overrides the failure or the pending retry: the route runs from the
        # state the instance is in, in this transaction (rolled back with it).
        await conn.execute(sql.SET_ACTIVE, instance.id)
    event = Event(
        CANCEL_EVENT,
        event_id,
        {"reason": reason},
        instance_id=instance.id,
        source="operator",
        request_id=request_id,
    )
    (result,) = await runtime.applier.apply_locked(conn, [event])
    outcome = result.outcome
    if result.failure is not None or outcome.status == "failed":
        raise CancelFailed(
            f"the cancel route of {instance.workflow} v{instance.version} in state "
            f"'{instance.state}' failed ({outcome.error or result.failure}); nothing was "
            "changed. Fix the workflow, or cancel with status_only to set the status alone"
        )
    if outcome.status != "applied":
        if instance.status is not InstanceStatus.ACTIVE:
            await conn.execute(sql.SET_STATUS, instance.id, instance.status.value)
        return None
    after = outcome.instance
    if after is None:
        row = await conn.fetchrow(sql.GET_INSTANCE, instance.id)
        after = instance_from_row(row)
    writes = WriteSet(runtime.clock(), runtime.topics)
    await retries.refuse_parked(conn, writes, after, after.revision, CANCELLED_WHILE_PARKED)
    await writes.write(conn)
    await timers.delete(conn, instance.id)
    routes = runtime.registry.get(instance.workflow, instance.version).spec.routes
    taken = [r for r in routes[(instance.state, CANCEL_EVENT)] if r.to_state == after.state]
    return Cancelled(after, "transition", taken[0].transition.name if taken else None)


async def retry(
    runtime: Runtime, instance_id: uuid.UUID, *, request_id: str | None = None
) -> Outcome:
    """Re-activate a failed instance (or hurry a retrying one): see :func:`retry_locked`."""
    async with driver_transaction(runtime.db) as conn:
        rows = await conn.fetch(sql.LOCK_INSTANCES, [instance_id])
        if not rows:
            raise InstanceNotFound(f"no instance {instance_id}")
        return await retry_locked(runtime, conn, instance_from_row(rows[0]), request_id=request_id)


async def retry_locked(
    runtime: Runtime,
    conn: asyncpg.Connection,
    instance: Instance,
    *,
    request_id: str | None = None,
) -> Outcome:
    """Re-activate ``instance`` (failed or retrying; locked by the caller's transaction on
    ``conn``) and re-apply the trigger that failed it, then the events parked behind it.

    The attempts start again from one under the transition's retry policy: a failure now
    answers ``retrying`` (or ``failed`` when the policy allows a single attempt).
    """
    instance_id = instance.id
    retryable = (InstanceStatus.FAILED, InstanceStatus.RETRYING)
    if instance.status not in retryable or instance.error is None:
        raise InvalidState(
            f"instance {instance_id} is {instance.status.value}; only failed or "
            "retrying instances can be retried"
        )
    error = instance.error
    missing = missing_definition(
        runtime.registry, instance.workflow, instance.version, instance.state
    )
    if missing is not None:  # its trigger would be refused, and its parked events with it
        message = orphaned_message(instance.workflow, instance.version, instance.state, missing)
        raise InstanceOrphaned(f"{message}; deploy it to retry the instance", missing)
    active = await retries.reactivate(
        runtime.applier,
        conn,
        instance,
        event_id=f"retry:{instance_id}:{instance.revision + 1}",
        event_type="conveyor.retry",
        source="operator",
        payload={"event_id": error["event_id"]},
        outcome="retried",
        request_id=request_id,
    )
    # The failed trigger may now be applied again (to this instance: the inbox is
    # keyed by instance and event id); a pending automatic retry is superseded.
    await inbox.forget(conn, instance.id, error["event_id"])
    await timers.delete(conn, instance.id, retries.RETRY_TIMER)
    return await retries.resume(
        runtime.applier, conn, active, error, attempts=0, request_id=request_id
    )


MOVED_WHILE_PARKED = (
    "the instance was moved by an operator while this event waited behind a retry; it was "
    "not applied"
)


class MoveFailed(ConveyorError):
    """A hook the move was asked to run raised: the instance was not moved."""

    status_code = 409
    title = "Move hook failed"


async def move(
    runtime: Runtime,
    instance_id: uuid.UUID,
    *,
    state: str,
    reason: str = "",
    run_hooks: bool = False,
    request_id: str | None = None,
) -> Instance:
    """Put an instance into another declared state of its version: see :func:`move_locked`."""
    async with driver_transaction(runtime.db) as conn:
        rows = await conn.fetch(sql.LOCK_INSTANCES, [instance_id])
        if not rows:
            raise InstanceNotFound(f"no instance {instance_id}")
        return await move_locked(
            runtime,
            conn,
            instance_from_row(rows[0]),
            state=state,
            reason=reason,
            run_hooks=run_hooks,
            request_id=request_id,
        )


async def move_locked(
    runtime: Runtime,
    conn: asyncpg.Connection,
    instance: Instance,
    *,
    state: str,
    reason: str = "",
    run_hooks: bool = False,
    request_id: str | None = None,
) -> Instance:
    """An operator's manual move of ``instance`` (locked by the caller's transaction) into
    ``state``, a state its version declares. No guard or action runs; hooks only with
    ``run_hooks``: then the on-exit hooks of its state and the on-enter hooks of ``state``
    run on its data (the pure :func:`~engine.decide.move_decision`), the data they change
    is stored and the messages they emit are queued to the outbox. A hook that raises
    moves nothing (:class:`MoveFailed`).

    As on entering ``state``: the instance's timers go (its old state's, a pending retry)
    and the new state's are set from now; ``state_entered_at`` is now; the status is what
    the state gives (``active``; ``completed`` or ``cancelled`` for a final state), so a
    failed or retrying instance is active again (events parked behind its retry are
    refused). Recorded in the history (``conveyor.move``, outcome ``moved``) and on the
    ``state_changed`` topic. An ended instance (completed, cancelled) is not moved.
    """
    if instance.status in (InstanceStatus.COMPLETED, InstanceStatus.CANCELLED):
        raise InvalidState(
            f"instance {instance.id} is {instance.status.value} in state '{instance.state}'; "
            "an ended instance is not moved"
        )
    try:
        definition = runtime.registry.get(instance.workflow, instance.version)
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
    now = runtime.clock()
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
    writes = WriteSet(now, runtime.topics)
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
    await timers.delete(conn, instance.id)
    await retries.refuse_parked(conn, writes, instance, revision, MOVED_WHILE_PARKED)
    await writes.write(conn)
    row = await conn.fetchrow(sql.GET_INSTANCE, instance.id)
    return instance_from_row(row)
