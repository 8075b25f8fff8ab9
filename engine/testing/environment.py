"""A workflow's unit tests without services: :class:`WorkflowEnvironment`.

The environment runs the runtime's own decision path on in-memory tables: a batch is
*load -> plan -> write*, as in :class:`engine.applier.Applier`, with
:func:`engine.planning.plan` in the middle and its :class:`~engine.store.writeset.WriteSet`
applied to :class:`~engine.testing.tables.Tables` (the same parameters the runtime sends
to PostgreSQL). Starts, failures, retries, resumptions, cancels and moves use the same
pure functions as the runtime (:mod:`engine.starts`, :mod:`engine.retry_plan`,
:mod:`engine.operator_plan`). What differs is the shell: a batch per trigger (a retry's
resumption: the failed trigger and the events parked behind it), no locks, no group
commit, no Kafka (what would be published stays in the in-memory outbox), and a clock
that moves only when told (:meth:`WorkflowEnvironment.advance` fires due timers one by
one, each at its due time). Not modelled: dead letters, Kafka routing, migrations.

Ids are deterministic: instance ids and the ids of events sent without one come from the
environment's ``seed`` and a counter, so two runs of a test write identical histories.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.decide import ActionFailed, Rejection
from engine.errors import InstanceNotFound, InvalidRequest
from engine.ids import name_id
from engine.model import (
    Event,
    HistoryRecord,
    Instance,
    InstanceStatus,
    InstanceTrigger,
    Outcome,
    Source,
    TimerFiring,
)
from engine.operator_plan import (
    CANCELLED_WHILE_PARKED,
    MOVED_WHILE_PARKED,
    RETRY_EVENT,
    Cancelled,
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
from engine.planning import Loaded, Result, plan
from engine.registry import Registry, WorkflowDefinition
from engine.retry_plan import (
    RETRY_TIMER,
    failure_writes,
    parked_event,
    reactivation_writes,
    refuse_parked_rows,
    resume_event_id,
    resume_payload,
    retry_at_once,
    settle_resumed,
    trigger_of,
)
from engine.starts import (
    existing_start,
    new_instance,
    prepare_start,
    record_start,
    reusable,
    start_row,
)
from engine.store.writeset import WriteSet
from engine.testing.tables import Message, Tables, TimerRow
from engine.wire.topics import Topics

DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)
"""Where an environment's clock starts unless told otherwise."""

SCHEDULER_LEASE = timedelta(seconds=60)
"""How long a fired timer stays claimed when its firing changed nothing (the instance was
retrying, or the firing failed): as :class:`engine.scheduler.TimerScheduler`'s lease."""

KIT_NAMESPACE = uuid.UUID("5a7c1e3d-9b2f-5d4e-8c6a-2e1f0d9c8b7a")
"""Namespace of the kit's deterministic ids: uuid5(namespace, f"{seed}/{kind}/{n}")."""


@dataclass(frozen=True, slots=True)
class Fired:
    """A timer :meth:`WorkflowEnvironment.advance` fired: which, when, and what it did."""

    instance_id: uuid.UUID
    name: str
    state: str
    at: datetime
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class PendingTimer:
    """A timer waiting to fire."""

    name: str
    state: str
    due_at: datetime


class WorkflowEnvironment:
    """Workflows running on in-memory tables and a fake clock, for unit tests.

    ``workflows``: the workflow classes (each version to run), or a ``registry``.
    ``start``: the clock's first reading (aware, UTC). ``seed``: the ids' seed.
    """

    def __init__(
        self,
        *workflows: WorkflowDefinition,
        registry: Registry | None = None,
        start: datetime = DEFAULT_START,
        seed: str | int = 0,
        topic_prefix: str = "conveyor",
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be an aware datetime (UTC)")
        self.registry = registry if registry is not None else Registry()
        for definition in workflows:
            self.registry.register(definition)
        if len(self.registry) == 0:
            raise ValueError("an environment needs at least one workflow")
        self.topics = Topics(topic_prefix)
        self.tables = Tables.empty()
        self.seed = str(seed)
        self._now = start
        self._counters: dict[str, int] = {}

    # ------------------------------------------------------------------ time and ids

    @property
    def now(self) -> datetime:
        """The environment's clock: moves only with :meth:`advance` (or :meth:`set_time`)."""
        return self._now

    def clock(self) -> datetime:
        """The clock as a :data:`engine.clock.Clock`."""
        return self._now

    def set_time(self, when: datetime) -> None:
        """Move the clock to ``when`` without firing timers (never backwards)."""
        if when < self._now:
            raise ValueError(f"the clock does not go back ({when} < {self._now})")
        self._now = when

    def next_id(self, kind: str) -> str:
        """The next deterministic id of ``kind`` (``instance``, ``event``, ``timer``)."""
        n = self._counters.get(kind, 0) + 1
        self._counters[kind] = n
        return name_id(KIT_NAMESPACE, f"{self.seed}/{kind}/{n}")

    # ------------------------------------------------------------------ start

    async def start(
        self,
        workflow: WorkflowDefinition | str,
        business_key: str,
        data: Mapping[str, Any],
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
        event_id: str | None = None,
        source: str = "api",
        request_id: str | None = None,
    ) -> Handle:
        """Start an instance, as :meth:`engine.runtime.Runtime.start` does (the same
        ``idempotency_key`` again answers the same instance; an ended instance's business
        key is taken over where the version has ``key_reuse = "after_end"``). Raises
        :class:`~engine.errors.PayloadInvalid` when ``data`` fails the data schema (its
        ``field_errors`` say where) and :class:`~engine.errors.InstanceConflict` when the
        business key is taken."""
        if not business_key:
            raise InvalidRequest("business_key must not be empty")
        name = workflow if isinstance(workflow, str) else workflow.spec.name
        if version is None and not isinstance(workflow, str):
            version = workflow.spec.version
        now = self._now
        definition = self.registry.get(name, version)
        instance_id = uuid.UUID(self.next_id("instance"))
        prepared = await prepare_start(
            definition,
            business_key,
            data,
            instance_id=instance_id,
            now=now,
            idempotency_key=idempotency_key,
            event_id=event_id,
            source=source,
            request_id=request_id,
        )
        instance = new_instance(prepared)
        writes = WriteSet(now, self.topics)
        record_start(writes, instance, prepared)
        row = start_row(prepared)
        if self.tables.insert(writes.start_values([row])):
            return Handle(self, instance_id)
        existing = self.tables.find_for_start(prepared.workflow, business_key, idempotency_key)
        assert existing is not None, "a start refused for no taken key"
        start_key = self.tables.start_keys.get(existing.id)
        spec = definition.spec
        if reusable(spec, existing.status.value, start_key, idempotency_key):
            self.tables.release_key(existing.id)
            self.tables.insert(writes.start_values([row]))
            return Handle(self, instance_id)
        return Handle(
            self, existing_start(existing, start_key, business_key, idempotency_key).instance.id
        )

    # ------------------------------------------------------------------ events

    async def send(
        self,
        target: Handle | uuid.UUID,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        source: Source = "api",
        request_id: str | None = None,
    ) -> Outcome:
        """Apply one event to an instance, as :meth:`engine.runtime.Runtime.send` does
        (a failing action is retried per its policy). ``id``: the event id (a new
        deterministic one when None; the same id again is a ``duplicate``)."""
        instance_id = target.id if isinstance(target, Handle) else target
        event = Event(
            type,
            id or self.next_id("event"),
            payload or {},
            instance_id=instance_id,
            source=source,
            request_id=request_id,
        )
        return await self.deliver(event)

    async def deliver(self, event: Event) -> Outcome:
        """Apply an :class:`~engine.model.Event` as given (addressed by instance id, or by
        workflow and business key)."""
        return await self._apply_with_retries(event)

    async def _apply_with_retries(self, trigger: InstanceTrigger) -> Outcome:
        """One trigger through a batch; a failure goes to the retry policy
        (``Runtime._apply_all`` for one trigger)."""
        (result,) = await self._apply([trigger])
        if result.failure is None:
            return result.outcome
        return await self._retry_failed(trigger, result.failure)

    async def _retry_failed(self, trigger: InstanceTrigger, failure: ActionFailed) -> Outcome:
        """As ``Runtime._retry_failed``: at once while the backoff is zero, then retrying
        with a retry timer, or failed after the last attempt."""
        attempt = 1
        while retry_at_once(failure, attempt):
            attempt += 1
            (result,) = await self._apply([trigger])
            if result.failure is None:
                return result.outcome
            failure = result.failure
        return self._schedule(trigger, failure, attempt)

    def _schedule(self, trigger: InstanceTrigger, failure: ActionFailed, attempts: int) -> Outcome:
        """As :func:`engine.retries.schedule_locked` (nothing can interleave here, so the
        instance is as the failed attempt found it)."""
        instance = self._instance(trigger)
        if instance is None:
            return Outcome(trigger.event_id, "not_found")
        return self._record_failure(instance, trigger, failure, attempts)

    def _record_failure(
        self, instance: Instance, trigger: InstanceTrigger, failure: ActionFailed, attempts: int
    ) -> Outcome:
        failed = failure_writes(self.topics, instance, trigger, failure, attempts, self._now)
        self.tables.write(failed.writes.values())
        if failed.next_at is not None:
            timer_id = uuid.UUID(self.next_id("timer"))
            self.tables.set_timer(
                TimerRow(timer_id, instance.id, RETRY_TIMER, instance.state, failed.next_at)
            )
        return failed.outcome

    # ------------------------------------------------------------------ the batch

    async def _apply(self, triggers: Sequence[InstanceTrigger]) -> list[Result]:
        """Load, plan, write: ``Applier.apply_locked`` on the in-memory tables."""
        planned = await plan(self.registry, self.topics, triggers, self._load(triggers), self._now)
        if planned.writes:
            self.tables.write(planned.writes.values())
        self.tables.park(planned.parked)
        return planned.results

    def _load(self, triggers: Sequence[InstanceTrigger]) -> Loaded:
        targets = [self._target(t) for t in triggers]
        ids = sorted({t for t in targets if t is not None and t in self.tables.instances})
        instances = [self.tables.instances[i] for i in ids]
        seen = frozenset(
            (target, t.event_id)
            for target, t in zip(targets, triggers, strict=True)
            if target is not None and (target, t.event_id) in self.tables.inbox
        )
        live_ids = {timer.id for timer in self.tables.timers.values()}
        live = frozenset(
            t.event_id for t in triggers if isinstance(t, TimerFiring) and t.timer_id in live_ids
        )
        failed = [i.id for i in instances if i.status is InstanceStatus.FAILED]
        return Loaded(targets, instances, seen, live, self.tables.parked_pairs(failed), True)

    def _target(self, trigger: InstanceTrigger) -> uuid.UUID | None:
        if isinstance(trigger, TimerFiring) or trigger.instance_id is not None:
            return trigger.instance_id
        found = self.tables.find(trigger.workflow or "", trigger.business_key or "")
        return found.id if found is not None else None

    def _instance(self, trigger: InstanceTrigger) -> Instance | None:
        target = self._target(trigger)
        return self.tables.instances.get(target) if target is not None else None

    # ------------------------------------------------------------------ timers

    async def advance(self, by: timedelta) -> list[Fired]:
        """Move the clock forward by ``by``, firing the timers that come due on the way in
        due order, each at its due time (the clock steps to it): state timers and the
        retry timers of retrying instances. Returns what fired, in order."""
        if by < timedelta(0):
            raise ValueError("advance by a positive duration")
        return await self.advance_to(self._now + by)

    async def advance_to(self, when: datetime) -> list[Fired]:
        """:meth:`advance` to the instant ``when``."""
        if when < self._now:
            raise ValueError(f"the clock does not go back ({when} < {self._now})")
        fired: list[Fired] = []
        while True:
            due = [
                t
                for t in self.tables.timers.values()
                if not t.spent and t.eligible_at <= when and not self._waits_for_retry(t)
            ]
            if not due:
                break
            timer = min(due, key=lambda t: (t.eligible_at, str(t.id)))
            self._now = max(self._now, timer.eligible_at)
            fired.append(await self._fire(timer))
        self._now = when
        return fired

    def _waits_for_retry(self, timer: TimerRow) -> bool:
        """A failed instance's timers wait for the operator's retry (as the scheduler's
        claim, ``CLAIM_DUE_TIMERS``, passes them over)."""
        instance = self.tables.instances.get(timer.instance_id)
        return instance is not None and instance.status is InstanceStatus.FAILED

    async def fire_due(self) -> list[Fired]:
        """Fire the timers due now (without moving the clock)."""
        return await self.advance_to(self._now)

    async def _fire(self, timer: TimerRow) -> Fired:
        """A scheduler's claim and firing of one timer (``TimerScheduler.fire_due``)."""
        timer.claimed_until = self._now + SCHEDULER_LEASE
        firing = TimerFiring(timer.id, timer.instance_id, timer.name, timer.state)
        if timer.name == RETRY_TIMER:
            outcome = await self._fire_retry(firing)
        else:
            outcome = await self._apply_with_retries(firing)
        # Processed but left in place (a refusal keeps the row): any later firing
        # would be a duplicate.
        timer.spent = (timer.instance_id, firing.event_id) in self.tables.inbox
        return Fired(timer.instance_id, timer.name, timer.state, self._now, outcome)

    async def _fire_retry(self, firing: TimerFiring) -> Outcome:
        """As :func:`engine.retries.fire`: the next attempt, then what was parked."""
        instance = self.tables.instances.get(firing.instance_id)
        if instance is None:
            return Outcome(firing.event_id, "not_found")
        live = self.tables.take_timer(firing.timer_id)
        error = instance.error
        if not live or instance.status is not InstanceStatus.RETRYING or not error:
            return Outcome(firing.event_id, "stale", instance.id)
        active = self._reactivate(
            instance,
            event_id=resume_event_id(instance),
            event_type=RETRY_TIMER,
            source="timer",
            payload=resume_payload(error),
            outcome="resumed",
        )
        return await self._resume(active, error, attempts=int(error["attempts"]))

    def _reactivate(
        self,
        instance: Instance,
        *,
        event_id: str,
        event_type: str,
        source: str,
        payload: Mapping[str, Any],
        outcome: str,
        request_id: str | None = None,
    ) -> Instance:
        writes, active = reactivation_writes(
            self.topics,
            instance,
            self._now,
            event_id=event_id,
            event_type=event_type,
            source=source,
            payload=payload,
            outcome=outcome,
            request_id=request_id,
        )
        self.tables.write(writes.values())
        return active

    async def _resume(
        self,
        instance: Instance,
        error: Mapping[str, Any],
        *,
        attempts: int,
        request_id: str | None = None,
    ) -> Outcome:
        """As :func:`engine.retries.resume`."""
        failed = trigger_of(error, instance.id, request_id)
        parked = [parked_event(row, instance.id) for row in self.tables.parked.get(instance.id, [])]
        if isinstance(failed, TimerFiring):
            self.tables.restore_timer(
                TimerRow(failed.timer_id, instance.id, failed.name, failed.state, self._now)
            )
        triggers: list[InstanceTrigger] = [failed, *parked]
        results = await self._apply(triggers)
        settled, failing = settle_resumed(triggers, results)
        self.tables.unpark(instance.id, settled)
        self.tables.release_claims(instance.id, but=RETRY_TIMER)
        if failing is None:
            return results[0].outcome
        failure = results[failing].failure
        assert failure is not None
        fresh = self.tables.instances[instance.id]
        outcome = self._record_failure(
            fresh, triggers[failing], failure, attempts + 1 if failing == 0 else 1
        )
        return outcome if failing == 0 else results[0].outcome

    # ------------------------------------------------------------------ operator actions

    async def cancel(
        self,
        target: Handle | uuid.UUID,
        *,
        reason: str = "",
        status_only: bool = False,
        request_id: str | None = None,
    ) -> Cancelled:
        """An operator's cancel, as :func:`engine.operations.cancel_locked`: the workflow's
        ``on_cancel`` route where it declares one, else the status alone. Raises
        :class:`~engine.errors.CancelFailed` when the route's action raised (nothing
        changed) and :class:`~engine.errors.InvalidState` for a completed instance."""
        instance = self._get(target)
        if instance.status is InstanceStatus.CANCELLED:
            return Cancelled(instance, "already")
        check_cancellable(instance)
        event_id = cancel_event_id(instance)
        if not status_only and has_cancel_route(self.registry, instance):
            cancelled = await self._cancel_route(instance, event_id, reason, request_id)
            if cancelled is not None:
                return cancelled
        writes, revision = cancel_status_writes(
            self.topics, instance, self._now, event_id, reason, request_id
        )
        rows = self.tables.drop_parked(instance.id)
        refuse_parked_rows(writes, instance, revision, CANCELLED_WHILE_PARKED, rows)
        self.tables.write(writes.values())
        self.tables.delete_timers(instance.id)
        return Cancelled(self.tables.instances[instance.id], "status")

    async def _cancel_route(
        self, instance: Instance, event_id: str, reason: str, request_id: str | None
    ) -> Cancelled | None:
        if instance.status is not InstanceStatus.ACTIVE:
            self.tables.instances[instance.id] = replace(instance, status=InstanceStatus.ACTIVE)
        event = cancel_route_event(instance, event_id, reason, request_id)
        planned = await plan(self.registry, self.topics, [event], self._load([event]), self._now)
        (result,) = planned.results
        outcome = result.outcome
        if result.failure is not None or outcome.status == "failed":
            self.tables.instances[instance.id] = instance  # rolled back
            raise cancel_route_failed(instance, outcome, result.failure)
        if planned.writes:
            self.tables.write(planned.writes.values())
        if outcome.status != "applied":
            current = self.tables.instances[instance.id]
            self.tables.instances[instance.id] = replace(current, status=instance.status)
            return None
        after = self.tables.instances[instance.id]
        writes = WriteSet(self._now, self.topics)
        rows = self.tables.drop_parked(instance.id)
        refuse_parked_rows(writes, after, after.revision, CANCELLED_WHILE_PARKED, rows)
        self.tables.write(writes.values())
        self.tables.delete_timers(instance.id)
        taken = cancel_route_taken(self.registry, instance, after)
        return Cancelled(self.tables.instances[instance.id], "transition", taken)

    async def retry(self, target: Handle | uuid.UUID, *, request_id: str | None = None) -> Outcome:
        """An operator's retry of a failed (or retrying) instance, as
        :func:`engine.operations.retry_locked`."""
        instance = self._get(target)
        error = check_retryable(self.registry, instance)
        active = self._reactivate(
            instance,
            event_id=retry_event_id(instance),
            event_type=RETRY_EVENT,
            source="operator",
            payload={"event_id": error["event_id"]},
            outcome="retried",
            request_id=request_id,
        )
        self.tables.inbox.pop((instance.id, error["event_id"]), None)
        self.tables.delete_timers(instance.id, RETRY_TIMER)
        return await self._resume(active, error, attempts=0, request_id=request_id)

    async def move(
        self,
        target: Handle | uuid.UUID,
        state: str,
        *,
        reason: str = "",
        run_hooks: bool = False,
        request_id: str | None = None,
    ) -> Instance:
        """An operator's move into ``state``, as :func:`engine.operations.move_locked`."""
        instance = self._get(target)
        writes, revision = await move_writes(
            self.registry,
            self.topics,
            instance,
            self._now,
            state=state,
            reason=reason,
            run_hooks=run_hooks,
            request_id=request_id,
        )
        self.tables.delete_timers(instance.id)
        rows = self.tables.drop_parked(instance.id)
        refuse_parked_rows(writes, instance, revision, MOVED_WHILE_PARKED, rows)
        self.tables.write(writes.values())
        return self.tables.instances[instance.id]

    # ------------------------------------------------------------------ inspection

    def handle(self, workflow: WorkflowDefinition | str, business_key: str) -> Handle:
        """The handle of the instance of ``workflow`` with ``business_key``."""
        name = workflow if isinstance(workflow, str) else workflow.spec.name
        found = self.tables.find(name, business_key)
        if found is None:
            raise InstanceNotFound(f"no {name} instance {business_key!r}")
        return Handle(self, found.id)

    @property
    def instances(self) -> list[Handle]:
        """Every instance, in the order started."""
        return [Handle(self, i) for i in self.tables.instances]

    @property
    def messages(self) -> list[Message]:
        """Every outbound message so far, in order (commands, events, state changes)."""
        return list(self.tables.outbox)

    @property
    def commands(self) -> list[Message]:
        """The commands workflows sent (``ctx.command``), in order."""
        return [m for m in self.tables.outbox if m.kind == "command"]

    @property
    def events(self) -> list[Message]:
        """The events workflows emitted (``ctx.emit``), in order."""
        return [m for m in self.tables.outbox if m.kind == "event"]

    def pending_timers(self) -> list[PendingTimer]:
        """Every timer waiting to fire, soonest first."""
        rows = sorted(self.tables.timers.values(), key=lambda t: (t.due_at, str(t.id)))
        return [PendingTimer(t.name, t.state, t.due_at) for t in rows]

    def _get(self, target: Handle | uuid.UUID) -> Instance:
        instance_id = target.id if isinstance(target, Handle) else target
        instance = self.tables.instances.get(instance_id)
        if instance is None:
            raise InstanceNotFound(f"no instance {instance_id}")
        return instance


class Handle:
    """One instance in a :class:`WorkflowEnvironment`: read it, send it events, assert."""

    def __init__(self, env: WorkflowEnvironment, instance_id: uuid.UUID) -> None:
        self.env = env
        self.id = instance_id

    def __repr__(self) -> str:
        instance = self.instance
        return f"<Handle {instance.workflow} {instance.business_key!r} in {instance.state}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Handle) and other.env is self.env and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # ------------------------------------------------------------------ reads

    @property
    def instance(self) -> Instance:
        """The instance as stored now."""
        return self.env.tables.instances[self.id]

    @property
    def state(self) -> str:
        return self.instance.state

    @property
    def status(self) -> InstanceStatus:
        return self.instance.status

    @property
    def data(self) -> Mapping[str, Any]:
        """The instance data as stored (JSON: decimals and datetimes as strings)."""
        return self.instance.data

    @property
    def revision(self) -> int:
        return self.instance.revision

    @property
    def error(self) -> Mapping[str, Any] | None:
        """What failed, for a retrying or failed instance."""
        return self.instance.error

    @property
    def business_key(self) -> str:
        return self.instance.business_key

    @property
    def history(self) -> list[HistoryRecord]:
        """Its history, in order: every trigger with its outcome (``started``,
        ``applied``, ``rejected``, ``retrying``, ``failed``, ``resumed``, ...) and reason."""
        return [h for h in self.env.tables.history if h.instance_id == self.id]

    @property
    def timers(self) -> list[PendingTimer]:
        """Its timers waiting to fire, soonest first."""
        return [PendingTimer(t.name, t.state, t.due_at) for t in self.env.tables.timers_of(self.id)]

    @property
    def messages(self) -> list[Message]:
        """Its outbound messages (commands, events, state changes), in order."""
        return [m for m in self.env.tables.outbox if m.instance_id == self.id]

    @property
    def commands(self) -> list[Message]:
        return [m for m in self.messages if m.kind == "command"]

    @property
    def events(self) -> list[Message]:
        return [m for m in self.messages if m.kind == "event"]

    @property
    def parked(self) -> list[Mapping[str, Any]]:
        """Events waiting behind its retry, in arrival order."""
        return list(self.env.tables.parked.get(self.id, []))

    # ------------------------------------------------------------------ actions

    async def send(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        source: Source = "api",
    ) -> Outcome:
        """:meth:`WorkflowEnvironment.send` to this instance."""
        return await self.env.send(self, type, payload, id=id, source=source)

    async def cancel(self, *, reason: str = "", status_only: bool = False) -> Cancelled:
        return await self.env.cancel(self, reason=reason, status_only=status_only)

    async def retry(self) -> Outcome:
        return await self.env.retry(self)

    async def move(self, state: str, *, reason: str = "", run_hooks: bool = False) -> Instance:
        return await self.env.move(self, state, reason=reason, run_hooks=run_hooks)

    # ------------------------------------------------------------------ assertions

    async def expect_applied(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        to: str | None = None,
        id: str | None = None,
    ) -> Outcome:
        """Send an event that must be applied (into state ``to``, if given)."""
        outcome = await self.send(type, payload, id=id)
        if outcome.status != "applied":
            raise AssertionError(f"{type} was not applied: {_describe(outcome)}")
        if to is not None and outcome.to_state != to:
            raise AssertionError(f"{type} went to {outcome.to_state!r}, not {to!r}")
        return outcome

    async def expect_rejected(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        reason: str | None = None,
        match: str | None = None,
        id: str | None = None,
    ) -> Rejection:
        """Send an event that must be refused, for ``reason`` (``not_allowed``,
        ``guard_refused``, ``invalid_payload``, ``unknown_event``, ``finished``,
        ``inactive``) if given, with ``match`` in its message if given. Returns the
        rejection (its ``allowed_events``, ``field_errors``, ``message``); the instance is
        unchanged."""
        before = self.instance
        outcome = await self.send(type, payload, id=id)
        rejection = outcome.rejection
        if outcome.status != "rejected" or rejection is None:
            raise AssertionError(f"{type} was not rejected: {_describe(outcome)}")
        if reason is not None and rejection.reason != reason:
            raise AssertionError(
                f"{type} was rejected as {rejection.reason!r}, not {reason!r}: {rejection.message}"
            )
        if match is not None and match not in rejection.message:
            raise AssertionError(f"{match!r} is not in the rejection: {rejection.message}")
        after = self.instance
        if (after.state, after.data, after.status) != (before.state, before.data, before.status):
            raise AssertionError(f"the rejected {type} changed the instance")
        return rejection

    def history_outcomes(self) -> list[tuple[str, str]]:
        """(event type, outcome) of each history entry, in order: handy in asserts."""
        return [(h.event_type, h.outcome) for h in self.history]


def _describe(outcome: Outcome) -> str:
    if outcome.rejection is not None:
        return f"{outcome.status} ({outcome.rejection.reason}: {outcome.rejection.message})"
    if outcome.error is not None:
        return f"{outcome.status} ({outcome.error})"
    return f"{outcome.status} (to {outcome.to_state!r})"


def messages_of(messages: Iterable[Message], type: str) -> list[Message]:
    """The messages of one type, in order."""
    return [m for m in messages if m.type == type]


__all__ = [
    "DEFAULT_START",
    "KIT_NAMESPACE",
    "SCHEDULER_LEASE",
    "Fired",
    "Handle",
    "PendingTimer",
    "WorkflowEnvironment",
    "messages_of",
]
