"""The pure parts of durable retries (:mod:`engine.retries` is their I/O shell).

What an instance's ``error`` records about the trigger that failed, how that trigger is
rebuilt from it, whether a failed attempt is tried again at once, and the write sets of
the status changes: a failure (``retrying`` or ``failed``), a resumption (``active``
again) and the refusal of events parked behind a retry. The runtime writes these to
PostgreSQL; the test kit (:mod:`engine.testing`) applies the same write sets in memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from engine.decide import ActionFailed
from engine.model import Event, Instance, InstanceStatus, InstanceTrigger, Outcome, TimerFiring
from engine.planning import Result
from engine.spec import RESERVED_TIMER_PREFIX
from engine.store.writeset import HistoryRow, WriteSet, rejected_payload
from engine.wire.topics import Topics

RETRY_TIMER = f"{RESERVED_TIMER_PREFIX}retry"
"""The name of the timer that fires a retrying instance's next attempt."""


def failure_record(
    trigger: InstanceTrigger, failure: ActionFailed, attempts: int, now: datetime
) -> dict[str, Any]:
    """What an instance's ``error`` holds about the trigger that failed: enough to apply
    it again (event type, payload, source, or the timer) and to explain it."""
    is_event = isinstance(trigger, Event)
    return {
        "event_id": trigger.event_id,
        "event_type": trigger.type if isinstance(trigger, Event) else trigger.name,
        "payload": dict(trigger.payload) if isinstance(trigger, Event) else {},
        "source": trigger.source if isinstance(trigger, Event) else "timer",
        "trigger": "event" if is_event else "timer",
        "timer": (
            {"id": str(trigger.timer_id), "name": trigger.name, "state": trigger.state}
            if isinstance(trigger, TimerFiring)
            else None
        ),
        "transition": failure.transition,
        "state": failure.state,
        "error": str(failure),
        "attempts": attempts,
        "failed_at": now.isoformat(),
    }


def trigger_of(
    error: Mapping[str, Any], instance_id: uuid.UUID, request_id: str | None
) -> InstanceTrigger:
    """The trigger an instance's ``error`` describes, ready to be applied again."""
    timer = error.get("timer")
    if error.get("trigger") == "timer" and timer:
        return TimerFiring(uuid.UUID(timer["id"]), instance_id, timer["name"], timer["state"])
    return Event(
        type=error["event_type"],
        event_id=error["event_id"],
        payload=error.get("payload") or {},
        instance_id=instance_id,
        source=error.get("source") or "operator",
        request_id=request_id,
    )


def parked_event(row: Mapping[str, Any], instance_id: uuid.UUID) -> Event:
    """The event a row of ``parked_events`` holds, ready to be applied."""
    return Event(
        type=row["event_type"],
        event_id=row["event_id"],
        payload=row["payload"],
        instance_id=instance_id,
        source=row["source"],
        request_id=row["request_id"],
    )


def retry_at_once(failure: ActionFailed, attempts: int) -> bool:
    """After ``attempts`` failed attempts: is the next one made at once (its policy allows
    it and its backoff is zero), rather than by a retry timer or not at all?"""
    return attempts < failure.retry.attempts and not failure.retry.backoff(attempts)


@dataclass(frozen=True, slots=True)
class FailureWrites:
    """What recording a failed attempt writes, and what the caller is answered. With
    ``next_at``, the caller also sets the instance's :data:`RETRY_TIMER` for then."""

    writes: WriteSet
    outcome: Outcome
    next_at: datetime | None


def failure_writes(
    topics: Topics,
    instance: Instance,
    trigger: InstanceTrigger,
    failure: ActionFailed,
    attempts: int,
    now: datetime,
) -> FailureWrites:
    """``instance`` (active) after ``attempts`` failed attempts of ``trigger``: ``retrying``
    when the policy allows another attempt, else ``failed``. One history entry and one
    ``state_changed`` message."""
    retrying = attempts < failure.retry.attempts
    error = failure_record(trigger, failure, attempts, now)
    next_at = now + failure.retry.backoff(attempts) if retrying else None
    if next_at is not None:
        error["next_attempt_at"] = next_at.isoformat()
    writes = WriteSet(now, topics)
    revision = writes.status_change(
        instance,
        status=(InstanceStatus.RETRYING if retrying else InstanceStatus.FAILED).value,
        error=error,
        event_id=trigger.event_id,
        event_type=error["event_type"],
        source=error["source"],
        # The error keeps the whole payload (to apply it again); each attempt's history
        # row is bounded like a refusal's.
        payload=rejected_payload(error["payload"]),
        outcome="retrying" if retrying else "failed",
        reason=str(failure),
        request_id=trigger.request_id if isinstance(trigger, Event) else None,
        to_state=None,
        transition=failure.transition,
    )
    if not retrying:
        writes.inbox(trigger.event_id, instance.id, "failed")
    outcome = Outcome(
        trigger.event_id,
        "retrying" if retrying else "failed",
        instance.id,
        instance.state,
        None,
        revision,
        error=str(failure),
    )
    return FailureWrites(writes, outcome, next_at)


def reactivation_writes(
    topics: Topics,
    instance: Instance,
    now: datetime,
    *,
    event_id: str,
    event_type: str,
    source: str,
    payload: Mapping[str, Any],
    outcome: str,
    request_id: str | None = None,
) -> tuple[WriteSet, Instance]:
    """``instance`` made active again, with a history entry and a ``state_changed``
    message saying why: the write set, and the instance as it then stands."""
    writes = WriteSet(now, topics)
    revision = writes.status_change(
        instance,
        status=InstanceStatus.ACTIVE.value,
        error=None,
        event_id=event_id,
        event_type=event_type,
        source=source,
        payload=payload,
        outcome=outcome,
        reason=None,
        request_id=request_id,
        to_state=instance.state,
    )
    active = replace(
        instance, status=InstanceStatus.ACTIVE, error=None, revision=revision, updated_at=now
    )
    return writes, active


def resume_payload(error: Mapping[str, Any]) -> dict[str, Any]:
    """The history payload of a retry timer's resumption: which trigger, which attempt."""
    return {"event_id": error["event_id"], "attempt": int(error["attempts"]) + 1}


def resume_event_id(instance: Instance) -> str:
    """The id of the history entry of a retry timer's resumption of ``instance``."""
    return f"resume:{instance.id}:{instance.revision + 1}"


def settle_resumed(
    triggers: Sequence[InstanceTrigger], results: Sequence[Result]
) -> tuple[list[str], int | None]:
    """After a resumption applied ``triggers`` (the failed one, then the parked events):
    the ids of the parked events no longer parked, and the index of the trigger that
    failed again, if one did (the triggers after it stay parked)."""
    settled = [
        trigger.event_id
        for trigger, result in zip(triggers[1:], results[1:], strict=True)
        if result.outcome.status not in ("failed", "deferred")
    ]
    failing = next((i for i, r in enumerate(results) if r.failure is not None), None)
    if failing is not None and failing > 0:
        settled.append(triggers[failing].event_id)  # no longer parked: it is the error now
    return settled, failing


def refuse_parked_rows(
    writes: WriteSet,
    instance: Instance,
    revision: int,
    reason: str,
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Refuse parked events (``rows`` of ``parked_events`` not processed yet), each with a
    history entry saying why, at ``revision``."""
    for row in rows:
        writes.history(
            HistoryRow(
                instance.id,
                revision,
                row["event_id"],
                row["event_type"],
                row["source"],
                "rejected",
                rejected_payload(row["payload"]),
                from_state=instance.state,
                reason=reason,
                request_id=row["request_id"],
            )
        )
        writes.inbox(row["event_id"], instance.id, "rejected")


__all__ = [
    "RETRY_TIMER",
    "FailureWrites",
    "failure_record",
    "failure_writes",
    "parked_event",
    "reactivation_writes",
    "refuse_parked_rows",
    "resume_event_id",
    "resume_payload",
    "retry_at_once",
    "settle_resumed",
    "trigger_of",
]
