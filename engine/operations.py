"""Operator actions: cancel and retry.

Functions over a :class:`~engine.runtime.Runtime`: operator actions sit above the
runtime (the HTTP API calls them with its runtime) and use only its public surface. Each is
one transaction that locks the instance, changes its status, and records the change in
its history and on the ``state_changed`` topic. (Failing and retrying after a failure are
:mod:`engine.retries`.)
"""

from __future__ import annotations

import uuid

from engine import retries
from engine.errors import InstanceNotFound, InvalidState
from engine.model import Instance, InstanceStatus, Outcome
from engine.runtime import Runtime
from engine.store import inbox, timers
from engine.store import statements as sql
from engine.store.database import driver_transaction
from engine.store.queries import instance_from_row
from engine.store.writeset import WriteSet

CANCELLED_WHILE_PARKED = (
    "the instance was cancelled while this event waited behind a retry; it was not applied"
)


async def cancel(
    runtime: Runtime, instance_id: uuid.UUID, *, reason: str = "", request_id: str | None = None
) -> Instance:
    """Cancel an active, retrying or failed instance: its timers go, events parked behind
    a retry are refused, its history says who and why."""
    async with driver_transaction(runtime.db) as conn:
        rows = await conn.fetch(sql.LOCK_INSTANCES, [instance_id])
        if not rows:
            raise InstanceNotFound(f"no instance {instance_id}")
        instance = instance_from_row(rows[0])
        if instance.status is InstanceStatus.CANCELLED:
            return instance
        if instance.status is InstanceStatus.COMPLETED:
            raise InvalidState(
                f"instance {instance_id} is completed in state '{instance.state}'; "
                "it cannot be cancelled"
            )
        writes = WriteSet(runtime.clock(), runtime.topics)
        revision = writes.status_change(
            instance,
            status=InstanceStatus.CANCELLED.value,
            error=instance.error,
            event_id=f"cancel:{instance_id}:{instance.revision + 1}",
            event_type="conveyor.cancel",
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
    return instance_from_row(row)


async def retry(
    runtime: Runtime, instance_id: uuid.UUID, *, request_id: str | None = None
) -> Outcome:
    """Re-activate a failed instance (or hurry a retrying one) and re-apply the trigger
    that failed it, then the events parked behind it, in one transaction.

    The attempts start again from one under the transition's retry policy: a failure now
    answers ``retrying`` (or ``failed`` when the policy allows a single attempt).
    """
    async with driver_transaction(runtime.db) as conn:
        rows = await conn.fetch(sql.LOCK_INSTANCES, [instance_id])
        if not rows:
            raise InstanceNotFound(f"no instance {instance_id}")
        instance = instance_from_row(rows[0])
        retryable = (InstanceStatus.FAILED, InstanceStatus.RETRYING)
        if instance.status not in retryable or instance.error is None:
            raise InvalidState(
                f"instance {instance_id} is {instance.status.value}; only failed or "
                "retrying instances can be retried"
            )
        error = instance.error
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
