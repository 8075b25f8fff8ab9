"""The pure step: definition + snapshot + trigger + now -> Decision or Rejection.

No I/O, no clock reads, no randomness: equal inputs give equal results, so the runtime
can retry a step, and tests can drive a workflow through time without sleeping. The
runtime applies a `Decision` (state, data, outbox messages, timers, history) in one
transaction. A `Rejection` is an expected answer (wrong state, bad payload); a raising
guard, action or hook is not, and surfaces as `ActionFailed`.
"""

from __future__ import annotations

import decimal
import enum
import inspect
import math
import re
import typing
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ValidationError

from engine.dsl import (
    DEFAULT_RETRY,
    Action,
    ActionContext,
    EmptyPayload,
    GuardContext,
    RetryPolicy,
    Workflow,
)
from engine.errors import ConveyorError, UnknownState
from engine.ids import name_id
from engine.spec import Route, TimerSpec, WorkflowSpec

START_TRANSITION = "<start>"
"""Transition name recorded in the history entry of a newly started instance."""

MESSAGE_NAMESPACE = uuid.UUID("6f1c2a52-4d0e-5b7e-9a51-3c0f6e1d2b8a")
"""Namespace of outbound message ids: uuid5(namespace, f"{trigger event_id}/{index}")."""

MAX_DECIMAL_DIGITS = 1000
"""Decimals a client sends (start data, event payloads) have at most this many digits."""
MAX_DECIMAL_EXPONENT = 1000
"""Nonzero client decimals lie between 1e-1000 and 1e+1000 in magnitude: far beyond any
amount or quantity, and far from where decimal arithmetic overflows (1e+999999), so sums
and products of them stay in range. Anything beyond is a field error, like a failed
schema (see :func:`validate_input`)."""
INT64 = 2**63


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The persisted state of one instance, as the pure step needs it."""

    state: str
    data: Mapping[str, Any]
    revision: int


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """An event delivered to an instance (from the API or Kafka)."""

    event_id: str
    type: str
    payload: Mapping[str, Any]
    source: str = "api"


@dataclass(frozen=True, slots=True)
class TimerTrigger:
    """A due timer; ``state`` is the state that set it (stale if the instance moved on)."""

    event_id: str
    timer_name: str
    state: str


Trigger = EventTrigger | TimerTrigger


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """An event or command to publish; ``topic=None`` means the runtime's default topic."""

    message_id: str
    kind: Literal["event", "command"]
    type: str
    payload: Mapping[str, Any]
    topic: str | None


@dataclass(frozen=True, slots=True)
class TimerToSet:
    """Fire timer ``name`` of ``state`` at ``due_at``, triggering transition ``trigger``."""

    name: str
    state: str
    due_at: datetime
    trigger: str


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One accepted trigger, as recorded in the instance history."""

    event_id: str
    trigger_type: Literal["event", "timer", "start"]
    event_type: str  # the event type, or the timer name
    from_state: str
    to_state: str
    transition: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    """An accepted trigger: what the runtime must persist and publish."""

    from_state: str  # "" for a newly started instance
    to_state: str
    data: Mapping[str, Any]
    outbound: tuple[OutboundMessage, ...]
    timers_to_set: tuple[TimerToSet, ...]
    timers_to_cancel: tuple[str, ...]  # cancel these first, then set timers_to_set
    history: HistoryEntry
    finished: bool
    transition: str
    retry: RetryPolicy


@dataclass(frozen=True, slots=True)
class FieldError:
    """One payload validation problem; ``path`` looks like ``items.0.sku``."""

    path: str
    message: str


RejectionReason = Literal[
    "not_allowed",
    "guard_refused",
    "invalid_payload",
    "unknown_event",
    "stale_timer",
    "finished",
    "inactive",  # set by the runtime: the instance is cancelled or failed
]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A trigger the instance does not accept; nothing changes."""

    reason: RejectionReason
    message: str
    allowed_events: tuple[str, ...]
    field_errors: tuple[FieldError, ...]
    event_id: str
    event_type: str
    state: str


class ActionFailed(ConveyorError):
    """A guard, action or hook raised; the original exception is ``__cause__``.

    The runtime retries the step following ``retry`` (the transition's policy); the worker
    never retries a batch for it (see :func:`engine.transient.is_transient`).
    """

    title = "Workflow action failed"

    def __init__(
        self, workflow: str, transition: str, state: str, retry: RetryPolicy, error: Exception
    ) -> None:
        super().__init__(
            f"{workflow}: transition '{transition}' failed in state '{state}': "
            f"{type(error).__name__}: {error}"
        )
        self.workflow = workflow
        self.transition = transition
        self.state = state
        self.retry = retry
        self.error = error


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
            fields = (FieldError("", f"a number cannot be computed with: {_decimal_error(error)}"),)
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
        for hook in route.exit_hooks:
            await _call(hook, context)
        action = route.transition.action
        if action is not None:
            await _call(action, context)
        context.state = route.to_state
        for hook in route.enter_hooks:
            await _call(hook, context)
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


def validate_input(
    schema: type[BaseModel], value: Mapping[str, Any]
) -> BaseModel | tuple[FieldError, ...]:
    """Validate what a client sent (start data, an event payload) against ``schema``.

    Field errors for what fails the schema; for numbers the engine can neither compute
    with nor store (decimals beyond :data:`MAX_DECIMAL_DIGITS` digits or 1e±
    :data:`MAX_DECIMAL_EXPONENT`, floats that are not finite, integers beyond 64 bits);
    and for a decimal error (overflow, invalid operation) that a validator of the
    schema raised computing with such numbers.
    """
    try:
        model = schema.model_validate(value)
    except ValidationError as error:
        return _field_errors(error)
    except decimal.DecimalException as error:
        culprit = next(_absurd_numbers_in_json(value, ""), None)
        return (culprit or FieldError("", f"a number is out of range: {_decimal_error(error)}"),)
    if _sound(model):
        return model
    return tuple(_unsound_numbers(model, ""))


def _decimal_error(error: decimal.DecimalException) -> str:
    """``InvalidOperation`` -> ``invalid operation``."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", type(error).__name__).lower()


def _sound(value: Any) -> bool:
    """Whether every number in ``value`` is in range: the fast check, on every start and
    every validated event, visiting only the fields that may hold numbers."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        in_range: bool = -INT64 <= value < INT64
        return in_range
    if kind is decimal.Decimal:
        return _decimal_problem(value) is None
    if kind is list or kind is tuple:
        return all(map(_sound, value))
    if kind is dict:
        return all(map(_sound, value.values()))
    if kind is float:
        return math.isfinite(value)
    if isinstance(value, BaseModel):
        for name in _numeric_fields(kind):
            if not _sound(getattr(value, name)):
                return False
        extra = value.__pydantic_extra__
        return not extra or _sound(extra)
    return next(_unsound_numbers(value, ""), None) is None  # sets, subclasses of int, ...


_NUMERIC_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {}
_NO_NUMBERS: tuple[type, ...] = (str, bytes, bool, enum.Enum, date, time, timedelta, uuid.UUID)


def _numeric_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` whose type may hold a number (computed once per class)."""
    found = _NUMERIC_FIELDS.get(model)
    if found is None:
        found = tuple(
            name
            for name, info in model.model_fields.items()
            if _may_hold_numbers(info.annotation, set())
        )
        _NUMERIC_FIELDS[model] = found
    return found


def _may_hold_numbers(annotation: Any, seen: set[type]) -> bool:
    if annotation is None or annotation is type(None) or annotation is Ellipsis:
        return False
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            if annotation in seen:  # a recursive model: its fields are being looked at
                return False
            seen.add(annotation)
            return annotation.model_config.get("extra") == "allow" or any(
                _may_hold_numbers(info.annotation, seen)
                for info in annotation.model_fields.values()
            )
        if issubclass(annotation, _NO_NUMBERS):  # datetime is a date
            return False
        if not typing.get_args(annotation):  # int, float, Decimal; any other class, to be safe
            return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return False
    arguments = typing.get_args(annotation)
    if origin is Annotated:
        return _may_hold_numbers(arguments[0], seen)
    if arguments:  # containers and unions
        return any(_may_hold_numbers(argument, seen) for argument in arguments)
    return True  # Any, a type variable, ...: anything


def _unsound_numbers(value: Any, path: str) -> Iterator[FieldError]:
    """Numbers in a validated model that are out of range (see :func:`validate_input`)."""
    if isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            yield from _unsound_numbers(getattr(value, name), _join(path, info.alias or name))
        extra = value.__pydantic_extra__
        if extra:
            for key, item in extra.items():
                yield from _unsound_numbers(item, _join(path, key))
    elif isinstance(value, str | bool) or value is None:
        return
    elif isinstance(value, decimal.Decimal):
        problem = _decimal_problem(value)
        if problem is not None:
            yield FieldError(path, problem)
    elif isinstance(value, int):
        if not -INT64 <= value < INT64:
            yield FieldError(path, "integers must fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield FieldError(path, "numbers must be finite")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _unsound_numbers(item, _join(path, str(key)))
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield from _unsound_numbers(item, _join(path, str(index)))


def _decimal_problem(value: decimal.Decimal) -> str | None:
    if not value.is_finite():
        return "numbers must be finite"
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if value.adjusted() - exponent >= MAX_DECIMAL_DIGITS:  # the digits there are, less one
        return f"numbers must have at most {MAX_DECIMAL_DIGITS} digits"
    if value and abs(value.adjusted()) > MAX_DECIMAL_EXPONENT:
        return (
            f"numbers must lie between 1e-{MAX_DECIMAL_EXPONENT} and 1e+{MAX_DECIMAL_EXPONENT}"
            " in magnitude"
        )
    return None


def _absurd_numbers_in_json(value: Any, path: str) -> Iterator[FieldError]:
    """Where a decimal error probably came from: numbers, or strings read as decimals, that
    are out of range (the schema has not said which strings are numbers)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _absurd_numbers_in_json(item, _join(path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _absurd_numbers_in_json(item, _join(path, str(index)))
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        if isinstance(value, str) and len(value) > 10_000:
            return
        try:
            number = decimal.Decimal(value)
        except (decimal.DecimalException, ValueError):
            return
        problem = _decimal_problem(number)
        if problem is not None:
            yield FieldError(path, problem)


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def _field_errors(error: ValidationError) -> tuple[FieldError, ...]:
    return tuple(
        FieldError(".".join(str(part) for part in item["loc"]), item["msg"])
        for item in error.errors(include_url=False)
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
