"""The pure middle of a runtime batch: from what was loaded under the lock to what to write.

A batch is *load -> plan -> write*. The runtime loads (locks the instances, reads which
event ids they processed and which timers are live), :func:`plan` decides, and the
runtime writes the :class:`Plan`'s write set in one statement. Planning does no I/O of
its own (the workflows' guards and actions may, through :func:`engine.decide.decide`):
unit tests drive it with plain instances.

For each trigger, in order: a duplicate is skipped; a trigger for an instance that is
missing (or locked by another transaction, when not waiting) comes back ``not_found`` or
``deferred``; a stale timer is ``stale``; a trigger for a *retrying* instance waits behind
the retry (``parked`` / ``retrying`` / ``deferred``, see :mod:`engine.retries`); otherwise
:func:`~engine.decide.decide` runs on the instance's snapshot as the batch has left it so
far. A guard, action or hook that raises blocks its instance for the rest of the batch:
its later triggers come back ``deferred`` and the runtime applies them alone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.decide import (
    ActionFailed,
    Decision,
    EventTrigger,
    Rejection,
    Snapshot,
    TimerTrigger,
    Trigger,
    decide,
)
from engine.model import (
    Event,
    Instance,
    InstanceStatus,
    InstanceTrigger,
    Outcome,
    OutcomeStatus,
    TimerFiring,
)
from engine.orphans import missing_definition, orphaned_message
from engine.registry import Registry
from engine.store.writeset import HistoryRow, InstanceUpdate, WriteSet, rejected_payload
from engine.wire.topics import Topics


@dataclass(frozen=True, slots=True)
class Loaded:
    """What the runtime read under the lock, for one batch of triggers."""

    targets: Sequence[uuid.UUID | None]  # each trigger's instance, if it exists
    instances: Sequence[Instance]  # the locked instances (skipped ones are absent)
    seen: frozenset[tuple[uuid.UUID, str]] = frozenset()  # processed (instance, event id)
    live_timers: frozenset[str] = frozenset()  # ids of the batch's timers that still exist
    parked: frozenset[tuple[uuid.UUID, str]] = frozenset()  # waiting behind a failed step
    waited: bool = True  # the lock waited for busy instances (else they were skipped)


@dataclass(frozen=True, slots=True)
class Result:
    """One trigger's outcome, and the failure when an action raised."""

    outcome: Outcome
    failure: ActionFailed | None = None


@dataclass(slots=True)
class Plan:
    """What a batch decided: the outcomes in trigger order, and what to write."""

    results: list[Result]
    writes: WriteSet
    parked: list[dict[str, Any]] = field(default_factory=list)  # rows of parked_events
    decide_seconds: float = 0.0


@dataclass(slots=True)
class _Working:
    """An instance's state while a batch runs through it."""

    instance: Instance
    state: str
    data: Mapping[str, Any]
    status: InstanceStatus
    revision: int
    entered: datetime | None = None
    error: Mapping[str, Any] | None = None
    changed: bool = False


async def plan(
    registry: Registry,
    topics: Topics,
    triggers: Sequence[InstanceTrigger],
    loaded: Loaded,
    now: datetime,
) -> Plan:
    """Decide every trigger of the batch, in order, against what ``loaded`` holds."""
    working = {i.id: _working(i) for i in loaded.instances}
    seen = set(loaded.seen)
    writes = WriteSet(now, topics)
    result = Plan([], writes)
    blocked: set[uuid.UUID] = set()
    started = time.perf_counter()
    for trigger, target in zip(triggers, loaded.targets, strict=True):
        event_id = trigger.event_id
        if target is not None and (target, event_id) in seen:
            result.results.append(Result(Outcome(event_id, "duplicate", target)))
            continue
        current = working.get(target) if target is not None else None
        if current is None:
            # Skipped because another transaction holds it, or really missing: when
            # skipping, the caller finds out by applying it alone.
            missing: OutcomeStatus = "not_found" if loaded.waited or target is None else "deferred"
            result.results.append(Result(Outcome(event_id, missing, target)))
            continue
        if current.instance.id in blocked:
            result.results.append(Result(Outcome(event_id, "deferred", target)))
            continue
        if isinstance(trigger, TimerFiring) and event_id not in loaded.live_timers:
            result.results.append(Result(Outcome(event_id, "stale", target)))
            continue
        if current.status is InstanceStatus.RETRYING:
            result.results.append(Result(_behind_retry(current, trigger, result.parked)))
            continue
        if current.status is InstanceStatus.FAILED and (target, event_id) in loaded.parked:
            # Parked before the last attempt failed: it still waits for the operator's
            # retry (refusing it now would lose it).
            result.results.append(Result(Outcome(event_id, "parked", target, current.state)))
            continue
        try:
            outcome = await _decide_one(registry, writes, current, trigger, now)
        except ActionFailed as failure:
            blocked.add(current.instance.id)
            failed = Outcome(event_id, "failed", current.instance.id, error=str(failure))
            result.results.append(Result(failed, failure))
            continue
        if claims_event_id(outcome.rejection):
            seen.add((current.instance.id, event_id))
        result.results.append(Result(outcome))
    for item in working.values():
        if item.changed:
            writes.update(
                item.instance.id,
                InstanceUpdate(
                    item.state,
                    item.data,
                    item.status.value,
                    item.revision,
                    item.entered,
                    item.error,
                ),
            )
    result.decide_seconds = time.perf_counter() - started
    return result


def decide_trigger(trigger: InstanceTrigger) -> Trigger:
    """The pure step's view of a trigger (the one place where the conversion happens)."""
    if isinstance(trigger, TimerFiring):
        return TimerTrigger(trigger.event_id, trigger.name, trigger.state)
    return EventTrigger(trigger.event_id, trigger.type, trigger.payload, trigger.source)


async def _decide_one(
    registry: Registry,
    writes: WriteSet,
    current: _Working,
    trigger: InstanceTrigger,
    now: datetime,
) -> Outcome:
    instance = current.instance
    event_id = trigger.event_id
    if current.status is not InstanceStatus.ACTIVE:
        message = (
            f"{instance.workflow} v{instance.version}: instance {instance.business_key!r} is "
            f"{current.status.value}; events no longer apply"
            + ("; retry it first" if current.status is InstanceStatus.FAILED else "")
        )
        event_type = trigger.name if isinstance(trigger, TimerFiring) else trigger.type
        rejection = Rejection("inactive", message, (), (), event_id, event_type, current.state)
        return _record_rejection(writes, current, trigger, rejection)
    missing = missing_definition(registry, instance.workflow, instance.version, current.state)
    if missing is not None:
        # Not a failure: the definition is gone (see `conveyor check`). The event id stays
        # unclaimed, so that a replay after the definition is deployed again applies it; a
        # timer is cancelled like any other refused timer.
        event_type = trigger.name if isinstance(trigger, TimerFiring) else trigger.type
        message = orphaned_message(instance.workflow, instance.version, current.state, missing)
        rejection = Rejection(
            "orphaned", message, (), (), event_id, event_type, current.state, missing
        )
        if isinstance(trigger, TimerFiring):
            writes.cancel_timer(instance.id, trigger.name)
        return _record_rejection(writes, current, trigger, rejection)
    definition = registry.get(instance.workflow, instance.version)
    snapshot = Snapshot(current.state, current.data, current.revision)
    decision = await decide(definition, snapshot, decide_trigger(trigger), now)
    if isinstance(decision, Rejection):
        if isinstance(trigger, TimerFiring):
            writes.cancel_timer(instance.id, trigger.name)
        return _record_rejection(writes, current, trigger, decision)
    revision = current.revision + 1
    record_decision(
        writes,
        instance,
        decision,
        revision,
        _source(trigger),
        _request_id(trigger),
        _payload(trigger),
        fired_timer=trigger.name if isinstance(trigger, TimerFiring) else None,
    )
    current.state = decision.to_state
    current.data = decision.data
    current.revision = revision
    current.changed = True
    if decision.from_state != decision.to_state or decision.timers_to_cancel:
        current.entered = now
    if decision.finished:
        current.status = InstanceStatus(decision.final_status)
    return Outcome(
        event_id,
        "applied",
        instance.id,
        decision.from_state,
        decision.to_state,
        revision,
        instance=_snapshot_of(current, now),
    )


def record_decision(
    writes: WriteSet,
    instance: Instance,
    decision: Decision,
    revision: int,
    source: str,
    request_id: str | None,
    payload: Mapping[str, Any],
    *,
    fired_timer: str | None = None,
) -> None:
    """Queue what an accepted decision writes: history, inbox, timers, outbound messages
    and, when the state or status changed, the ``state_changed`` message."""
    event_id = decision.history.event_id
    status = decision.final_status
    writes.history(
        HistoryRow(
            instance.id,
            revision,
            event_id,
            decision.history.event_type,
            source,
            "started" if decision.history.trigger_type == "start" else "applied",
            payload,
            from_state=decision.from_state or None,
            to_state=decision.to_state,
            transition=decision.transition,
            request_id=request_id,
        )
    )
    if decision.history.trigger_type != "start":
        writes.inbox(event_id, instance.id, "applied")
    if fired_timer is not None:
        writes.cancel_timer(instance.id, fired_timer)
    for name in decision.timers_to_cancel:
        writes.cancel_timer(instance.id, name)
    for timer in decision.timers_to_set:
        writes.set_timer(instance.id, event_id, timer)
    writes.queue_outbound(instance, decision.outbound, request_id)
    if decision.from_state == decision.to_state and not decision.finished:
        return  # an internal or self-transition: the state did not change
    writes.state_changed(
        instance,
        from_state=decision.from_state or None,
        to_state=decision.to_state,
        status=status,
        revision=revision,
        event_id=event_id,
        event_type=decision.history.event_type,
        request_id=request_id,
    )


def _record_rejection(
    writes: WriteSet, current: _Working, trigger: InstanceTrigger, rejection: Rejection
) -> Outcome:
    instance = current.instance
    writes.history(
        HistoryRow(
            instance.id,
            current.revision,
            trigger.event_id,
            trigger.name if isinstance(trigger, TimerFiring) else trigger.type,
            _source(trigger),
            "rejected",
            # Bounded: a refused event must not grow the history by its whole payload.
            rejected_payload(_payload(trigger)),
            from_state=current.state,
            reason=rejection.message,
            request_id=_request_id(trigger),
        )
    )
    if claims_event_id(rejection):
        writes.inbox(trigger.event_id, instance.id, "rejected")
    status: OutcomeStatus = "stale" if rejection.reason == "stale_timer" else "rejected"
    return Outcome(
        trigger.event_id,
        status,
        instance.id,
        current.state,
        None,
        current.revision,
        rejection=rejection,
        instance=_snapshot_of(current, None),
    )


def claims_event_id(rejection: Rejection | None) -> bool:
    """Whether a decided trigger uses up its event id (an inbox row). A payload that
    failed its schema does not: the same id with a corrected payload may still apply (a
    dead letter's replay, or a client's fixed retry); nor does an orphaned instance's (its
    definition may be deployed again). Its history row is written anyway."""
    return rejection is None or rejection.reason not in ("invalid_payload", "orphaned")


def _behind_retry(
    current: _Working, trigger: InstanceTrigger, parked: list[dict[str, Any]]
) -> Outcome:
    """A trigger for an instance that is retrying a failed step waits for that step: an
    event is parked (applied in order after the retry), the failed trigger itself
    delivered again changes nothing, and a timer fires again once its scheduler's lease
    runs out (or at the first poll after the retry succeeds)."""
    instance = current.instance
    error = instance.error or {}
    if trigger.event_id == error.get("event_id"):
        return Outcome(
            trigger.event_id, "retrying", instance.id, current.state, error=error.get("error")
        )
    if isinstance(trigger, TimerFiring):
        return Outcome(trigger.event_id, "deferred", instance.id)
    parked.append(parked_row(instance, trigger))
    return Outcome(trigger.event_id, "parked", instance.id, current.state)


def parked_row(instance: Instance, event: Event) -> dict[str, Any]:
    """A row of ``parked_events`` for ``event``, waiting behind ``instance``'s retry."""
    return {
        "instance_id": str(instance.id),
        "event_id": event.event_id,
        "event_type": event.type,
        "payload": event.payload,
        "source": event.source,
        "request_id": event.request_id,
    }


def _source(trigger: InstanceTrigger) -> str:
    return "timer" if isinstance(trigger, TimerFiring) else trigger.source


def _request_id(trigger: InstanceTrigger) -> str | None:
    return None if isinstance(trigger, TimerFiring) else trigger.request_id


def _payload(trigger: InstanceTrigger) -> Mapping[str, Any]:
    return {} if isinstance(trigger, TimerFiring) else trigger.payload


def _snapshot_of(current: _Working, now: datetime | None) -> Instance:
    """The instance as the batch has left it so far (what the commit will store)."""
    base = current.instance
    return Instance(
        id=base.id,
        workflow=base.workflow,
        version=base.version,
        business_key=base.business_key,
        state=current.state,
        data=current.data,
        status=current.status,
        revision=current.revision,
        created_at=base.created_at,
        updated_at=now if now is not None and current.changed else base.updated_at,
        state_entered_at=current.entered or base.state_entered_at,
        error=current.error,
    )


def _working(instance: Instance) -> _Working:
    return _Working(
        instance,
        instance.state,
        instance.data,
        instance.status,
        instance.revision,
        error=instance.error,
    )


__all__ = ["Loaded", "Plan", "Result", "decide_trigger", "parked_row", "plan", "record_decision"]
