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

import asyncpg

from engine import retries
from engine.errors import (
    InstanceNotFound,
)
from engine.model import Instance, InstanceStatus, Outcome
from engine.operator_plan import (
    CANCELLED_WHILE_PARKED,
    MOVED_WHILE_PARKED,
    RETRY_EVENT,
    Cancelled,
    MoveFailed,
    cancel_event_id,
    cancel_route_event,
    cancel_route_failed,
    cancel_route_taken,
    cancel_status_writes,
    check_cancellable,
    check_retryable,
    has_cancel_route,
    move_writes,
    retry_event_id,
)
from engine.runtime import Runtime
from engine.store import inbox, timers
from engine.store import statements as sql
from engine.store.database import driver_transaction
from engine.store.queries import instance_from_row
from engine.store.writeset import WriteSet


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
    check_cancellable(instance)
    event_id = cancel_event_id(instance)
    if not status_only and has_cancel_route(runtime.registry, instance):
        cancelled = await _cancel_route(runtime, conn, instance, event_id, reason, request_id)
        if cancelled is not None:
            return cancelled
    writes, revision = cancel_status_writes(
        runtime.topics, instance, runtime.clock(), event_id, reason, request_id
    )
    await retries.refuse_parked(conn, writes, instance, revision, CANCELLED_WHILE_PARKED)
    await writes.write(conn)
    await timers.delete(conn, instance.id)
    row = await conn.fetchrow(sql.GET_INSTANCE, instance.id)
    return Cancelled(instance_from_row(row), "status")


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
    event = cancel_route_event(instance, event_id, reason, request_id)
    (result,) = await runtime.applier.apply_locked(conn, [event])
    outcome = result.outcome
    if result.failure is not None or outcome.status == "failed":
        raise cancel_route_failed(instance, outcome, result.failure)
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
    return Cancelled(after, "transition", cancel_route_taken(runtime.registry, instance, after))


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
    error = check_retryable(runtime.registry, instance)
    active = await retries.reactivate(
        runtime.applier,
        conn,
        instance,
        event_id=retry_event_id(instance),
        event_type=RETRY_EVENT,
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
    writes, revision = await move_writes(
        runtime.registry,
        runtime.topics,
        instance,
        runtime.clock(),
        state=state,
        reason=reason,
        run_hooks=run_hooks,
        request_id=request_id,
    )
    await timers.delete(conn, instance.id)
    await retries.refuse_parked(conn, writes, instance, revision, MOVED_WHILE_PARKED)
    await writes.write(conn)
    row = await conn.fetchrow(sql.GET_INSTANCE, instance.id)
    return instance_from_row(row)


__all__ = [
    "CANCELLED_WHILE_PARKED",
    "MOVED_WHILE_PARKED",
    "Cancelled",
    "MoveFailed",
    "cancel",
    "cancel_locked",
    "move",
    "move_locked",
    "retry",
    "retry_locked",
]
