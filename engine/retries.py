"""Durable retries: a failing step waits in the database, not in a sleep.

When a guard, action or hook raises and its transition's :class:`~engine.dsl.RetryPolicy`
allows another attempt after a backoff, the instance becomes ``retrying``: its ``error``
names the trigger, the attempts so far and when the next one is due, a timer named
``conveyor.retry`` is set for then, and the caller is answered at once (HTTP 202, the
Kafka batch moves on). Neither a request nor a partition waits for the backoff.

While it is retrying, events for the instance are *parked* in arrival order
(``parked_events``; a redelivery of one is parked once). When the timer fires, the
scheduler applies the failing trigger and then the parked events, in order, in one
transaction. A failure on the way schedules the next attempt of that trigger (a parked
event that fails starts its own count); after the last attempt the instance is
``failed`` and whatever is still parked waits for an operator's retry, which resumes the
same way. Cancelling the instance refuses what is parked, in its history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from engine.applier import Applier
from engine.decide import ActionFailed
from engine.model import Event, Instance, InstanceStatus, InstanceTrigger, Outcome, TimerFiring
from engine.observability import get_logger
from engine.retry_plan import (
    RETRY_TIMER,
    failure_record,
    failure_writes,
    parked_event,
    reactivation_writes,
    refuse_parked_rows,
    resume_event_id,
    resume_payload,
    settle_resumed,
    trigger_of,
)
from engine.store import parked as parked_events
from engine.store import statements as sql
from engine.store import timers
from engine.store.database import driver_transaction
from engine.store.queries import instance_from_row
from engine.store.writeset import WriteSet

log = get_logger("conveyor.runtime")


# ---------------------------------------------------------------------------- scheduling


async def schedule(
    applier: Applier, trigger: InstanceTrigger, failure: ActionFailed, attempts: int
) -> Outcome:
    """After ``attempts`` failed attempts with more allowed: the instance waits as
    ``retrying`` and a timer fires the next attempt after the policy's backoff."""
    async with driver_transaction(applier.db) as conn:
        return await schedule_locked(applier, conn, trigger, failure, attempts)


async def schedule_locked(
    applier: Applier,
    conn: asyncpg.Connection,
    trigger: InstanceTrigger,
    failure: ActionFailed,
    attempts: int,
) -> Outcome:
    """:func:`schedule` inside the caller's transaction (a dead letter's replay)."""
    (instance_id,) = await applier.targets(conn, [trigger])
    rows = await conn.fetch(sql.LOCK_INSTANCES, [instance_id])
    if not rows:
        return Outcome(trigger.event_id, "not_found")
    instance = instance_from_row(rows[0])
    timer_ids = [trigger.timer_id] if isinstance(trigger, TimerFiring) else []
    seen_rows = await conn.fetch(
        sql.SEEN_EVENTS_AND_LIVE_TIMERS, [instance.id], [trigger.event_id], timer_ids
    )
    if any(r["kind"] == "e" for r in seen_rows):
        # Applied meanwhile by another delivery of the same event.
        return Outcome(trigger.event_id, "duplicate", instance.id)
    if timer_ids and not any(r["kind"] == "t" for r in seen_rows):
        return Outcome(trigger.event_id, "stale", instance.id)  # cancelled meanwhile
    if instance.status is not InstanceStatus.ACTIVE:
        # Between the failed attempt and this lock the instance moved on: another
        # trigger failed first (it is retrying), or it was cancelled or completed.
        # This trigger then goes where any trigger would go now: parked behind that
        # retry, or refused, or "retrying" if it is the very trigger being retried.
        (result,) = await applier.apply_locked(conn, [trigger], True)
        return result.outcome
    return await _record_failure(applier, conn, instance, trigger, failure, attempts)


async def _record_failure(
    applier: Applier,
    conn: asyncpg.Connection,
    instance: Instance,
    trigger: InstanceTrigger,
    failure: ActionFailed,
    attempts: int,
) -> Outcome:
    """With the instance locked: ``retrying`` with a timer when the policy allows another
    attempt, else ``failed``. One history entry and one ``state_changed`` message."""
    now = applier.clock()
    failed = failure_writes(applier.topics, instance, trigger, failure, attempts, now)
    next_at = failed.next_at
    is_event = isinstance(trigger, Event)
    writes = failed.writes
    await writes.write(conn)
    if next_at is not None:
        await timers.set_timer(conn, instance.id, RETRY_TIMER, instance.state, next_at)
    log_fields = {
        "instance_id": str(instance.id),
        "workflow": instance.workflow,
        "event_id": trigger.event_id,
        "error": str(failure),
        "attempts": attempts,
        "trigger": "event" if is_event else "timer",
    }
    if next_at is not None:
        log.warning("action failed; will retry", next_attempt_at=next_at.isoformat(), **log_fields)
    else:
        log.error("instance failed", **log_fields)
    return failed.outcome


# ---------------------------------------------------------------------------- parking


# ---------------------------------------------------------------------------- resuming


async def fire(applier: Applier, firing: TimerFiring) -> Outcome:
    """The retry timer fired: apply the failing trigger, then what was parked."""
    async with driver_transaction(applier.db) as conn:
        rows = await conn.fetch(sql.LOCK_INSTANCES, [firing.instance_id])
        if not rows:
            return Outcome(firing.event_id, "not_found")
        instance = instance_from_row(rows[0])
        live = await timers.take(conn, firing.timer_id)
        error = instance.error
        if not live or instance.status is not InstanceStatus.RETRYING or not error:
            return Outcome(firing.event_id, "stale", instance.id)
        active = await reactivate(
            applier,
            conn,
            instance,
            event_id=resume_event_id(instance),
            event_type=RETRY_TIMER,
            source="timer",
            payload=resume_payload(error),
            outcome="resumed",
        )
        return await resume(applier, conn, active, error, attempts=int(error["attempts"]))


async def reactivate(
    applier: Applier,
    conn: asyncpg.Connection,
    instance: Instance,
    *,
    event_id: str,
    event_type: str,
    source: str,
    payload: Mapping[str, Any],
    outcome: str,
    request_id: str | None = None,
) -> Instance:
    """With the instance locked: make it active again, with a history entry and a
    ``state_changed`` message saying why; return it as it now stands."""
    writes, active = reactivation_writes(
        applier.topics,
        instance,
        applier.clock(),
        event_id=event_id,
        event_type=event_type,
        source=source,
        payload=payload,
        outcome=outcome,
        request_id=request_id,
    )
    await writes.write(conn)
    return active


async def resume(
    applier: Applier,
    conn: asyncpg.Connection,
    instance: Instance,
    error: Mapping[str, Any],
    *,
    attempts: int,
    request_id: str | None = None,
) -> Outcome:
    """With the instance locked and made active again (the caller records why), apply the
    failed trigger ``error`` describes (attempt number ``attempts + 1``) and then the
    parked events in order, all in this transaction.

    Returns what became of the failed trigger. If one of them fails, it is scheduled again
    (or fails the instance) and those after it stay parked.
    """
    failed = trigger_of(error, instance.id, request_id)
    parked = [
        parked_event(row, instance.id) for row in await parked_events.parked(conn, instance.id)
    ]
    if isinstance(failed, TimerFiring):
        # Make the failed firing live again (it may have been dropped with the failure).
        await timers.restore(
            conn, failed.timer_id, instance.id, failed.name, failed.state, applier.clock()
        )
    triggers: list[InstanceTrigger] = [failed, *parked]
    results = await applier.apply_locked(conn, triggers, True)
    settled, failing = settle_resumed(triggers, results)
    await parked_events.unpark(conn, instance.id, settled)
    # Timers that came due while the instance was retrying were refused ("deferred") and
    # sit under a scheduler's lease: let the next poll fire them instead of the lease's end.
    await timers.release_claims(conn, instance.id, but=RETRY_TIMER)
    if failing is None:
        log.info(
            "retry succeeded",
            instance_id=str(instance.id),
            event_id=failed.event_id,
            attempt=attempts + 1,
            parked_applied=len(parked),
        )
        return results[0].outcome
    failure = results[failing].failure
    assert failure is not None
    row = await conn.fetchrow(sql.GET_INSTANCE, instance.id)
    fresh = instance_from_row(row)
    outcome = await _record_failure(
        applier,
        conn,
        fresh,
        triggers[failing],
        failure,
        attempts + 1 if failing == 0 else 1,
    )
    return outcome if failing == 0 else results[0].outcome


async def refuse_parked(
    conn: asyncpg.Connection, writes: WriteSet, instance: Instance, revision: int, reason: str
) -> int:
    """On cancel: what was parked is refused, each with a history entry saying why (at the
    cancel's ``revision``). One already processed (refused while the instance was failed,
    say) is only dropped."""
    rows = await parked_events.drop_parked(conn, instance.id)
    refuse_parked_rows(writes, instance, revision, reason, rows)
    return len(rows)


__all__ = [
    "RETRY_TIMER",
    "failure_record",
    "fire",
    "reactivate",
    "refuse_parked",
    "resume",
    "schedule",
    "schedule_locked",
    "trigger_of",
]
