"""Operator actions and failure handling: cancel, retry, and marking an instance failed.

Functions over a :class:`~engine.runtime.Runtime` (which exposes them as methods). Each is
one transaction that locks the instance, changes its status, and records the change in
its history and on the ``state_changed`` topic.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.decide import ActionFailed
from engine.errors import InstanceNotFound, InvalidState
from engine.model import Event, Instance, InstanceStatus, Outcome, TimerFiring
from engine.observability import get_logger
from engine.store import statements as sql
from engine.store.database import driver_transaction
from engine.store.queries import instance_from_row
from engine.store.writeset import InstanceUpdate, WriteSet

if TYPE_CHECKING:
    from engine.runtime import Runtime

log = get_logger("conveyor.runtime")

Trigger = Event | TimerFiring


async def mark_failed(
    runtime: Runtime, trigger: Trigger, failure: ActionFailed, attempts: int
) -> Outcome:
    """After the last attempt: the instance is failed, with the error in its history."""
    event_type = trigger.type if isinstance(trigger, Event) else trigger.name
    payload = dict(trigger.payload) if isinstance(trigger, Event) else {}
    source = trigger.source if isinstance(trigger, Event) else "timer"
    request_id = trigger.request_id if isinstance(trigger, Event) else None
    async with driver_transaction(runtime.engine) as conn:
        (instance_id,) = await runtime._targets(conn, [trigger])
        rows = await conn.fetch(sql.LOCK_INSTANCES, [instance_id])
        if not rows:
            return Outcome(trigger.event_id, "not_found")
        instance = instance_from_row(rows[0])
        # Event ids are deduplicated per instance: was this one processed for this instance?
        seen = await conn.fetch(
            sql.SEEN_EVENTS_AND_LIVE_TIMERS, [instance.id], [trigger.event_id], []
        )
        if seen:
            return Outcome(trigger.event_id, "duplicate", instance.id)
        now = runtime.clock()
        error = {
            "event_id": trigger.event_id,
            "event_type": event_type,
            "payload": payload,
            "source": source,
            "trigger": "event" if isinstance(trigger, Event) else "timer",
            "timer": _timer_json(trigger) if isinstance(trigger, TimerFiring) else None,
            "transition": failure.transition,
            "state": failure.state,
            "error": str(failure),
            "attempts": attempts,
            "failed_at": now.isoformat(),
        }
        writes = WriteSet(now, runtime.topics)
        revision = status_change(
            writes,
            instance,
            status=InstanceStatus.FAILED,
            error=error,
            event_id=trigger.event_id,
            event_type=event_type,
            source=source,
            payload=payload,
            outcome="failed",
            reason=str(failure),
            request_id=request_id,
            to_state=None,
            transition=failure.transition,
        )
        writes.inbox(trigger.event_id, instance.id, "failed")
        await conn.fetchrow(sql.APPLY, *writes.params())
    log.error(
        "instance failed",
        instance_id=str(instance.id),
        workflow=instance.workflow,
        event_id=trigger.event_id,
        error=str(failure),
        attempts=attempts,
    )
    return Outcome(
        trigger.event_id,
        "failed",
        instance.id,
        instance.state,
        None,
        revision,
        error=str(failure),
    )


def status_change(
    writes: WriteSet,
    instance: Instance,
    *,
    status: InstanceStatus,
    error: Mapping[str, Any] | None,
    event_id: str,
    event_type: str,
    source: str,
    payload: Mapping[str, Any],
    outcome: str,
    reason: str | None,
    request_id: str | None,
    to_state: str | None,
    transition: str | None = None,
) -> int:
    """Queue a status change (failed, cancelled, active again): the instance row, its
    history entry and the ``state_changed`` message. Returns the new revision."""
    revision = instance.revision + 1
    writes.update(
        instance.id,
        InstanceUpdate(instance.state, instance.data, status.value, revision, None, error),
    )
    writes.history(
        instance.id,
        revision,
        event_id,
        event_type,
        source,
        instance.state,
        to_state,
        transition,
        payload,
        outcome,
        reason,
        request_id,
    )
    writes.state_changed(
        instance,
        from_state=instance.state,
        to_state=instance.state,
        status=status.value,
        revision=revision,
        event_id=event_id,
        event_type=event_type,
        request_id=request_id,
    )
    return revision


async def cancel(
    runtime: Runtime, instance_id: uuid.UUID, *, reason: str = "", request_id: str | None = None
) -> Instance:
    """Cancel an active instance: its timers go, its history says who and why."""
    async with driver_transaction(runtime.engine) as conn:
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
        status_change(
            writes,
            instance,
            status=InstanceStatus.CANCELLED,
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
        await conn.fetchrow(sql.APPLY, *writes.params())
        await conn.execute("delete from timers where instance_id = $1", instance.id)
        row = await conn.fetchrow(sql.GET_INSTANCE, instance.id)
    return instance_from_row(row)


async def retry(
    runtime: Runtime, instance_id: uuid.UUID, *, request_id: str | None = None
) -> Outcome:
    """Re-activate a failed instance and re-apply the event that failed it."""
    async with driver_transaction(runtime.engine) as conn:
        rows = await conn.fetch(sql.LOCK_INSTANCES, [instance_id])
        if not rows:
            raise InstanceNotFound(f"no instance {instance_id}")
        instance = instance_from_row(rows[0])
        if instance.status is not InstanceStatus.FAILED or instance.error is None:
            raise InvalidState(
                f"instance {instance_id} is {instance.status.value}; only failed "
                "instances can be retried"
            )
        error = instance.error
        now = runtime.clock()
        writes = WriteSet(now, runtime.topics)
        status_change(
            writes,
            instance,
            status=InstanceStatus.ACTIVE,
            error=None,
            event_id=f"retry:{instance_id}:{instance.revision + 1}",
            event_type="conveyor.retry",
            source="operator",
            payload={"event_id": error["event_id"]},
            outcome="retried",
            reason=None,
            request_id=request_id,
            to_state=instance.state,
        )
        await conn.fetchrow(sql.APPLY, *writes.params())
        # The failed event may now be applied again (to this instance: the inbox is keyed
        # by instance and event id).
        await conn.execute(
            "delete from inbox where instance_id = $1 and event_id = $2",
            instance.id,
            error["event_id"],
        )
    trigger: Trigger
    if error.get("trigger") == "timer" and error.get("timer"):
        timer = error["timer"]
        trigger = TimerFiring(uuid.UUID(timer["id"]), instance.id, timer["name"], timer["state"])
        async with driver_transaction(runtime.engine) as conn:
            # Restore the timer row so that the firing is live again.
            await conn.execute(
                "insert into timers (id, instance_id, name, state, due_at) values"
                " ($1, $2, $3, $4, $5) on conflict do nothing",
                trigger.timer_id,
                instance.id,
                trigger.name,
                trigger.state,
                now,
            )
        return (await runtime.fire_timers([trigger]))[0]
    trigger = Event(
        type=error["event_type"],
        event_id=error["event_id"],
        payload=error.get("payload") or {},
        instance_id=instance.id,
        source=error.get("source") or "operator",
        request_id=request_id,
    )
    return await runtime.send(trigger)


def _timer_json(firing: TimerFiring) -> dict[str, str]:
    return {"id": str(firing.timer_id), "name": firing.name, "state": firing.state}
