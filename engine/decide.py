"""The pure step: definition + snapshot + trigger + now -> Decision or Rejection.

No I/O, no clock reads, no randomness: equal inputs give equal results, so the runtime
can retry a step, and tests can drive a workflow through time without sleeping. The
runtime applies a `Decision` (state, data, outbox messages, timers, history) in one
transaction. A `Rejection` is an expected answer (wrong state, bad payload); a raising
guard, action or hook is not, and surfaces as `ActionFailed`.
"""

from __future__ import annotations

import decimal
import inspect
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from engine.decisions import (
    ActionFailed,
    Decision,
    EventTrigger,
    FieldError,
    HistoryEntry,
    OutboundMessage,
    Rejection,
    RejectionReason,
    Snapshot,
    TimerToSet,
    TimerTrigger,
    Trigger,
)
from engine.declarations import (
    DEFAULT_RETRY,
    Action,
    ActionContext,
    EmptyPayload,
    GuardContext,
    PendingMessage,
)
from engine.dsl import Workflow
from engine.errors import UnknownState
from engine.ids import name_id
from engine.input_validation import (
    INT64,
    MAX_DECIMAL_DIGITS,
    MAX_DECIMAL_EXPONENT,
    decimal_error_name,
    validate_input,
)
from engine.spec import Route, TimerSpec, WorkflowSpec

__all__ = [
    "INT64",
    "MAX_DECIMAL_DIGITS",
    "MAX_DECIMAL_EXPONENT",
    "MESSAGE_NAMESPACE",
    "MOVE_EVENT",
    "MOVE_TRANSITION",
    "START_TRANSITION",
    "ActionFailed",
    "Decision",
    "EventTrigger",
    "FieldError",
    "HistoryEntry",
    "OutboundMessage",
    "Rejection",
    "RejectionReason",
    "Snapshot",
    "TimerToSet",
    "TimerTrigger",
    "Trigger",
    "decide",
    "initial_decision",
    "move_decision",
    "validate_input",
]

START_TRANSITION = "<start>"
"""Transition name recorded in the history entry of a newly started instance."""

MOVE_EVENT = "conveyor.move"
"""The event type of an operator's manual move (history, ``state_changed``, hooks)."""

MOVE_TRANSITION = "<move>"
"""Transition name of an operator's manual move in its decision (and a hook's failure)."""

MESSAGE_NAMESPACE = uuid.UUID("6f1c2a52-4d0e-5b7e-9a51-3c0f6e1d2b8a")
"""Namespace of outbound message ids: uuid5(namespace, f"{trigger event_id}/{index}")."""


async def decide(
    definition: type[Workflow[Any]], snapshot: Snapshot, trigger: Trigger, now: datetime
) -> Decision | Rejection:
    """Apply ``trigger`` to an instance in ``snapshot`` at time ``now``; never mutates inputs."""
    spec = definition.spec
    state = snapshot.state
    if state not in spec.states:
        raise UnknownState(
            f"{spec.label}: snapshot is in state '{state}', which this version does not declare"
        )
    if type(trigger) is TimerTrigger:
        return await _decide_timer(spec, snapshot, trigger, now)
    assert isinstance(trigger, EventTrigger)
    event_type = trigger.type
    if state in spec.finals:
        return _reject(
            spec,
            "finished",
            f"{spec.label}: instance finished in state '{state}'; no further events apply",
            trigger.event_id,
            event_type,
            state,
        )
    if event_type not in spec.handled_events:
        handled = ", ".join(sorted(spec.handled_events))
        return _reject(
            spec,
            "unknown_event",
            f"{spec.label}: unknown event type '{event_type}'; this workflow handles: {handled}",
            trigger.event_id,
            event_type,
            state,
        )
    payload: BaseModel | None = None
    schema = spec.payload_schemas.get(event_type, EmptyPayload)
    if event_type in spec.validated_events:
        checked = validate_input(schema, trigger.payload)
        if isinstance(checked, BaseModel):
            payload = checked
        else:
            fields = checked
            details = "; ".join(f"{f.path or '(payload)'}: {f.message}" for f in fields)
            return _reject(
                spec,
                "invalid_payload",
                f"{spec.label}: invalid payload for '{event_type}': {details}",
                trigger.event_id,
                event_type,
                state,
                field_errors=fields,
            )
    routes = spec.routes.get((state, event_type))
    if routes is None:
        allowed = ", ".join(spec.allowed_events[state]) or "nothing (no events apply)"
        return _reject(
            spec,
            "not_allowed",
            f"{spec.label}: can't apply '{event_type}' in state '{state}'; allowed here: {allowed}",
            trigger.event_id,
            event_type,
            state,
        )

    first = routes[0]
    if not first.needs_context:
        # Fast path: an unguarded transition with no action or hooks leaves data untouched.
        return _decision(first, snapshot.data, (), trigger.event_id, "event", event_type, now)

    data = spec.data_schema.model_validate(snapshot.data)
    if payload is None:
        payload = schema.model_validate(trigger.payload)
    chosen: Route | None = None
    for candidate in routes:
        guard = candidate.transition.guard
        if guard is None:
            chosen = candidate
            break
        check = GuardContext(data, payload, now, state, event_type)
        try:
            passed = guard(check)
            if not isinstance(passed, bool) and inspect.isawaitable(passed):
                passed = await passed
        except Exception as error:
            raise _failed(spec, candidate, error) from error
        if passed:
            chosen = candidate
            break
    if chosen is None:
        names = ", ".join(r.transition.name for r in routes)
        return _reject(
            spec,
            "guard_refused",
            f"{spec.label}: '{event_type}' refused in state '{state}': no guard passed ({names})",
            trigger.event_id,
            event_type,
            state,
        )
    return await _run(spec, chosen, data, payload, trigger.event_id, "event", event_type, now)


async def _decide_timer(
    spec: WorkflowSpec, snapshot: Snapshot, trigger: TimerTrigger, now: datetime
) -> Decision | Rejection:
    state = snapshot.state
    name = trigger.timer_name
    if state in spec.finals:
        return _reject(
            spec,
            "finished",
            f"{spec.label}: instance finished in state '{state}'; timer '{name}' ignored",
            trigger.event_id,
            name,
            state,
        )
    route = spec.timer_routes.get((state, name))
    if trigger.state != state or route is None:
        return _reject(
            spec,
            "stale_timer",
            f"{spec.label}: timer '{name}' of state '{trigger.state}' is stale; "
            f"the instance is in state '{state}'",
            trigger.event_id,
            name,
            state,
        )
    if not route.needs_context:
        return _decision(route, snapshot.data, (), trigger.event_id, "timer", name, now)
    data = spec.data_schema.model_validate(snapshot.data)
    return await _run(spec, route, data, EmptyPayload(), trigger.event_id, "timer", name, now)


async def initial_decision(
    definition: type[Workflow[Any]],
    data: Mapping[str, Any],
    *,
    event_id: str,
    now: datetime,
) -> Decision | Rejection:
    """Start an instance: validate ``data``, run the initial state's on-enter hooks, set its
    timers. ``from_state`` is ``""``; a bad ``data`` gives ``Rejection("invalid_payload")``."""
    spec = definition.spec
    event_type = spec.start_event or START_TRANSITION
    checked = validate_input(spec.data_schema, data)
    if not isinstance(checked, BaseModel):
        return _invalid_data(spec, checked, event_id, event_type)
    model = checked
    initial = spec.states[spec.initial]
    context: ActionContext[Any, Any] = ActionContext(
        model, EmptyPayload(), now, initial.name, event_type, from_state="", to_state=initial.name
    )
    for hook in initial.on_enter:
        try:
            await _call(hook, context)
        except decimal.DecimalException as error:
            # At a start, the data is the hooks' only input: a decimal that cannot be
            # computed with (overflow, invalid operation) is the client's data at fault.
            fields = (
                FieldError("", f"a number cannot be computed with: {decimal_error_name(error)}"),
            )
            return _invalid_data(spec, fields, event_id, event_type)
        except Exception as error:
            raise ActionFailed(
                spec.label, START_TRANSITION, initial.name, DEFAULT_RETRY, error
            ) from error
    return Decision(
        from_state="",
        to_state=initial.name,
        data=model.model_dump(mode="json"),
        outbound=_outbound(event_id, context.messages),
        timers_to_set=_timers(initial.timers, now),
        timers_to_cancel=(),
        history=HistoryEntry(
            event_id, "start", event_type, "", initial.name, START_TRANSITION, now
        ),
        finished=False,
        transition=START_TRANSITION,
        retry=DEFAULT_RETRY,
    )


async def _run(
    spec: WorkflowSpec,
    route: Route,
    data: BaseModel,
    payload: BaseModel,
    event_id: str,
    trigger_type: Literal["event", "timer"],
    event_type: str,
    now: datetime,
) -> Decision:
    """Exit hooks of the source, the action, enter hooks of the target, in that order."""
    context: ActionContext[Any, Any] = ActionContext(
        data,
        payload,
        now,
        route.from_state,
        event_type,
        from_state=route.from_state,
        to_state=route.to_state,
    )
    try:
        await _run_steps(
            context, route.exit_hooks, route.transition.action, route.to_state, route.enter_hooks
        )
    except Exception as error:
        raise _failed(spec, route, error) from error
    return _decision(
        route,
        data.model_dump(mode="json"),
        context.messages,
        event_id,
        trigger_type,
        event_type,
        now,
    )


async def _run_steps(
    context: ActionContext[Any, Any],
    exit_hooks: Sequence[Action],
    action: Action | None,
    to_state: str,
    enter_hooks: Sequence[Action],
) -> None:
    """Run the source's exit hooks, the action, then (in ``to_state``) the target's enter
    hooks on ``context``; whatever one of them raises propagates."""
    for hook in exit_hooks:
        await _call(hook, context)
    if action is not None:
        await _call(action, context)
    context.state = to_state
    for hook in enter_hooks:
        await _call(hook, context)


async def move_decision(
    definition: type[Workflow[Any]],
    snapshot: Snapshot,
    to_state: str,
    *,
    event_id: str,
    now: datetime,
    run_hooks: bool = False,
) -> Decision:
    """An operator's manual move of the instance in ``snapshot`` into ``to_state``.

    No guard or action runs. With ``run_hooks`` the on-exit hooks of the source state and
    then the on-enter hooks of ``to_state`` run on the instance data (validated with the
    version's data schema), as on a transition: the data they change and the messages
    they emit (ids derived from ``event_id``) are in the decision. A source state the
    version does not declare (an orphaned instance) has no exit hooks. Without
    ``run_hooks`` the data is kept as it is and nothing is emitted. The target's timers
    are set from ``now``. Raises :class:`ActionFailed` (transition ``<move>``) when a
    hook raises or the data does not fit the schema, and :class:`UnknownState` for an
    undeclared ``to_state``.
    """
    spec = definition.spec
    target = spec.states.get(to_state)
    if target is None:
        raise UnknownState(f"{spec.label}: no state '{to_state}' to move into")
    source = spec.states.get(snapshot.state)
    exit_hooks = source.on_exit if source is not None else ()
    data: Mapping[str, Any] = snapshot.data
    messages: tuple[PendingMessage, ...] = ()
    if run_hooks and (exit_hooks or target.on_enter):
        try:
            model = spec.data_schema.model_validate(snapshot.data)
            context: ActionContext[Any, Any] = ActionContext(
                model,
                EmptyPayload(),
                now,
                snapshot.state,
                MOVE_EVENT,
                from_state=snapshot.state,
                to_state=to_state,
            )
            await _run_steps(context, exit_hooks, None, to_state, target.on_enter)
        except Exception as error:
            raise ActionFailed(
                spec.label, MOVE_TRANSITION, snapshot.state, DEFAULT_RETRY, error
            ) from error
        data = model.model_dump(mode="json")
        messages = context.messages
    return Decision(
        from_state=snapshot.state,
        to_state=to_state,
        data=data,
        outbound=_outbound(event_id, messages),
        timers_to_set=_timers(target.timers, now),
        timers_to_cancel=(),
        history=HistoryEntry(
            event_id, "event", MOVE_EVENT, snapshot.state, to_state, MOVE_TRANSITION, now
        ),
        finished=target.final,
        transition=MOVE_TRANSITION,
        retry=DEFAULT_RETRY,
        cancelled=target.cancelled,
    )


async def _call(callable_: Action, context: ActionContext[Any, Any]) -> None:
    result = callable_(context)
    if result is not None and inspect.isawaitable(result):
        await result


def _decision(
    route: Route,
    data: Mapping[str, Any],
    messages: Sequence[Any],
    event_id: str,
    trigger_type: Literal["event", "timer"],
    event_type: str,
    now: datetime,
) -> Decision:
    transition = route.transition
    return Decision(
        from_state=route.from_state,
        to_state=route.to_state,
        data=data,
        outbound=_outbound(event_id, messages) if messages else (),
        timers_to_set=_timers(route.timers_to_set, now) if route.timers_to_set else (),
        timers_to_cancel=route.timers_to_cancel,
        history=HistoryEntry(
            event_id,
            trigger_type,
            event_type,
            route.from_state,
            route.to_state,
            transition.name,
            now,
        ),
        finished=route.finished,
        transition=transition.name,
        retry=transition.retry,
        cancelled=route.cancels,
    )


def _outbound(event_id: str, messages: Sequence[Any]) -> tuple[OutboundMessage, ...]:
    return tuple(
        OutboundMessage(
            message_id=name_id(MESSAGE_NAMESPACE, f"{event_id}/{index}"),
            kind=message.kind,
            type=message.type,
            payload=message.payload,
            topic=message.topic,
        )
        for index, message in enumerate(messages)
    )


def _timers(timers: tuple[TimerSpec, ...], now: datetime) -> tuple[TimerToSet, ...]:
    return tuple(TimerToSet(t.name, t.state, now + t.delay, t.transition) for t in timers)


def _failed(spec: WorkflowSpec, route: Route, error: Exception) -> ActionFailed:
    return ActionFailed(
        spec.label, route.transition.name, route.from_state, route.transition.retry, error
    )


def _invalid_data(
    spec: WorkflowSpec, fields: tuple[FieldError, ...], event_id: str, event_type: str
) -> Rejection:
    details = "; ".join(f"{f.path or '(data)'}: {f.message}" for f in fields)
    return _reject(
        spec,
        "invalid_payload",
        f"{spec.label}: invalid initial data: {details}",
        event_id,
        event_type,
        "",
        field_errors=fields,
    )


def _reject(
    spec: WorkflowSpec,
    reason: RejectionReason,
    message: str,
    event_id: str,
    event_type: str,
    state: str,
    *,
    field_errors: tuple[FieldError, ...] = (),
) -> Rejection:
    return Rejection(
        reason=reason,
        message=message,
        allowed_events=spec.allowed_events.get(state, ()),
        field_errors=field_errors,
        event_id=event_id,
        event_type=event_type,
        state=state,
    )
