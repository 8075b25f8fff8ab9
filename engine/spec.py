"""The compiled form of a workflow: validated, with the pure step's lookup tables.

`engine.dsl.Workflow` subclasses are compiled here when their class is defined; a broken
definition raises `DefinitionError` naming the workflow and the state at fault. This module
reads the building blocks of `engine.declarations` and knows nothing of `engine.dsl`,
which imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, get_args

from pydantic import BaseModel

from engine.declarations import (
    CANCEL_EVENT,
    Action,
    EmptyPayload,
    Guard,
    OperatorCancel,
    RetryPolicy,
    State,
    Transitions,
)
from engine.errors import DefinitionError

RESERVED_EVENT_PREFIX = "conveyor."
"""Event types Conveyor keeps for itself: only ``conveyor.cancel``, sent by an operator's
cancel (never by a client: the API and the worker refuse the prefix), may have routes."""

RESERVED_TIMER_PREFIX = "conveyor."
"""Timer names Conveyor keeps for itself (``conveyor.retry`` fires durable retries)."""

KeyReuse = Literal["never", "after_end"]
"""When a start may take a business key that an earlier instance holds: ``never`` (one
instance per key, ever) or ``after_end`` (once that instance has completed or been
cancelled; the new instance takes the key and the old one keeps its history)."""

KEY_REUSE_POLICIES: tuple[KeyReuse, ...] = get_args(KeyReuse)


@dataclass(frozen=True, slots=True)
class TimerSpec:
    name: str
    state: str
    delay: timedelta
    transition: str


@dataclass(frozen=True, slots=True)
class StateSpec:
    name: str
    initial: bool
    final: bool
    description: str
    cancelled: bool  # a final state whose instances end ``cancelled``
    sla: timedelta | None
    on_enter: tuple[Action, ...]
    on_exit: tuple[Action, ...]
    timers: tuple[TimerSpec, ...]


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    """A named transition with its source states resolved (``on_any`` expanded)."""

    name: str
    event: str | None
    timer: str | None
    sources: tuple[str, ...]
    target: str | None  # None: internal transition
    any_state: bool
    guard: Guard | None
    action: Action | None
    retry: RetryPolicy
    description: str

    def target_from(self, source: str) -> str:
        return source if self.target is None else self.target


@dataclass(frozen=True, slots=True)
class Route:
    """A transition taken from one source state, with everything the pure step needs."""

    transition: TransitionSpec
    from_state: str
    to_state: str
    exit_hooks: tuple[Action, ...]
    enter_hooks: tuple[Action, ...]
    timers_to_cancel: tuple[str, ...]
    timers_to_set: tuple[TimerSpec, ...]
    finished: bool
    cancels: bool  # the target is a cancelled state: the instance ends ``cancelled``
    needs_context: bool  # a guard, action or hook runs, so the data model is built


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """Lookup tables precomputed when the workflow class is defined (read-only by convention)."""

    name: str
    version: int
    description: str
    data_schema: type[BaseModel]
    states: Mapping[str, StateSpec]
    initial: str
    finals: frozenset[str]
    slas: Mapping[str, timedelta]  # state -> its SLA, for the states that declare one
    transitions: tuple[TransitionSpec, ...]
    payload_schemas: Mapping[str, type[BaseModel]]
    validated_events: frozenset[str]  # events whose payload must be validated up front
    routes: Mapping[tuple[str, str], tuple[Route, ...]]  # (state, event) -> alternatives
    timer_routes: Mapping[tuple[str, str], Route]  # (state, timer name) -> route
    allowed_events: Mapping[str, tuple[str, ...]]
    handled_events: frozenset[str]
    start_event: str | None
    key_reuse: KeyReuse = "never"  # the policy of the version being started decides

    @property
    def label(self) -> str:
        """``order v1``: how messages name the workflow."""
        return f"{self.name} v{self.version}"


_RESERVED = frozenset(
    {
        "name",
        "version",
        "description",
        "data_schema",
        "events",
        "start_event",
        "key_reuse",
        "spec",
    }
)


def compile_workflow(cls: type) -> WorkflowSpec:
    """Validate a workflow class (an `engine.dsl.Workflow` subclass) and build its lookup
    tables; the class is read only through its attributes."""
    name = getattr(cls, "name", None)
    version = getattr(cls, "version", 1)
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"workflow class {cls.__qualname__}: set `name` to a non-empty str")
    if not isinstance(version, int) or version < 1:
        raise DefinitionError(f"workflow {name}: `version` must be a positive int")
    label = f"{name} v{version}"

    def fail(message: str, state: str | None = None) -> DefinitionError:
        where = f" (state '{state}')" if state else ""
        return DefinitionError(f"{label}{where}: {message}")

    data_schema = getattr(cls, "data_schema", None)
    if not (isinstance(data_schema, type) and issubclass(data_schema, BaseModel)):
        raise fail("set `data_schema` to a pydantic BaseModel subclass")

    # Merge class bodies base-first so a subclass can extend or override a workflow.
    attributes: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        attributes.update(vars(klass))

    state_names: dict[int, str] = {}
    states: dict[str, State] = {}
    groups: dict[str, Transitions] = {}
    for attr, value in attributes.items():
        if isinstance(value, State):
            if attr in _RESERVED:
                raise fail(f"'{attr}' is a reserved attribute; rename the state", attr)
            if id(value) in state_names:
                raise fail(f"declared twice, also as '{state_names[id(value)]}'", attr)
            state_names[id(value)] = attr
            states[attr] = value
        elif isinstance(value, Transitions):
            groups[attr] = value

    key_reuse = getattr(cls, "key_reuse", "never")
    if key_reuse not in KEY_REUSE_POLICIES:
        choices = ", ".join(f"'{p}'" for p in KEY_REUSE_POLICIES)
        raise fail(f"`key_reuse` must be one of {choices}, not {key_reuse!r}")

    initials = [n for n, s in states.items() if s.initial]
    if len(initials) != 1:
        found = ", ".join(initials) or "none"
        raise fail(f"needs exactly one initial state (State(initial=True)); found: {found}")
    initial = initials[0]
    for state_name, state in states.items():
        if state.initial and state.final:
            raise fail("the initial state cannot be final", state_name)
        if state.sla is not None:
            if not isinstance(state.sla, timedelta) or state.sla <= timedelta(0):
                raise fail("sla must be a positive timedelta", state_name)
            if state.final:
                raise fail("a final state cannot have an SLA: instances never leave it", state_name)
    finals = frozenset(n for n, s in states.items() if s.final)
    non_finals = tuple(n for n in states if n not in finals)

    def resolve(state: State, role: str, transition: str) -> str:
        found = state_names.get(id(state))
        if found is not None:
            return found
        if state.name:  # assigned in the body of another class, e.g. another workflow
            raise fail(
                f"{transition} {role} the state '{state.name}' of another class, not a state "
                f"of this workflow; declare the state in the body of {cls.__name__}"
            )
        raise fail(
            f"{transition} {role} a state that is not declared in this workflow (did you "
            "forget to assign it in the class body?)"
        )

    owners: dict[int, str] = {}  # id of a DSL transition -> the name it is declared under
    labels: dict[int, str] = {}  # id of a TransitionSpec -> how messages name it
    positions: dict[int, int] = {}  # id of a TransitionSpec -> its place among alternatives
    transitions: list[TransitionSpec] = []
    timers: dict[str, list[TimerSpec]] = {n: [] for n in states}
    for group_name, group in groups.items():
        for position, item in enumerate(group.items, start=1):
            # ``pay = a | b`` declares two alternatives under one name: name them apart.
            called = (
                f"alternative {position} of transition '{group_name}'"
                if len(group.items) > 1
                else f"transition '{group_name}'"
            )
            owner = owners.get(id(item))
            if owner == group_name:
                raise fail(f"transition '{group_name}' lists the same alternative twice")
            if owner is not None:
                raise fail(
                    f"transition '{group_name}' reuses transition '{owner}'; each transition "
                    f"is declared under one name: compose the alternatives in '{group_name}' "
                    f"itself and drop '{owner}'"
                )
            owners[id(item)] = group_name
            any_state = item.sources is None
            sources = (
                non_finals
                if item.sources is None
                else tuple(resolve(s, "leaves", called) for s in item.sources)
            )
            target = None if item.target is None else resolve(item.target, "targets", called)
            if item.event == CANCEL_EVENT and (target is None or target not in finals):
                raise fail(
                    f"{called} is an operator cancel (on_cancel): it must move to a final "
                    "state (e.g. State(cancelled=True)), not stay or move on"
                )
            timer = item.timer
            if timer is not None and sources[0] in finals:
                raise fail(
                    f"final state '{sources[0]}' cannot have a timer (timer '{timer.name}' of "
                    f"{called}); final states are never left",
                    sources[0],
                )
            for source in sources:
                if source in finals:
                    raise fail(
                        f"{called} leaves a final state; final states have no outgoing transitions",
                        source,
                    )
            if timer is not None:
                source = sources[0]
                if timer.delay <= timedelta(0):
                    raise fail(f"timer '{timer.name}' needs a positive delay", source)
                if timer.name.startswith(RESERVED_TIMER_PREFIX):
                    raise fail(
                        f"timer name '{timer.name}' is reserved: names starting with "
                        f"'{RESERVED_TIMER_PREFIX}' are Conveyor's own (its retry timer)",
                        source,
                    )
                if any(t.name == timer.name for t in timers[source]):
                    raise fail(f"duplicate timer name '{timer.name}'", source)
                timers[source].append(TimerSpec(timer.name, source, timer.delay, group_name))
            spec = TransitionSpec(
                name=group_name,
                event=item.event,
                timer=None if timer is None else timer.name,
                sources=sources,
                target=target,
                any_state=any_state,
                guard=item.guard,
                action=item.action,
                retry=item.retry,
                description=item.description,
            )
            labels[id(spec)] = called
            positions[id(spec)] = position
            transitions.append(spec)

    state_specs = {
        n: StateSpec(
            name=n,
            initial=s.initial,
            final=s.final,
            description=s.description,
            cancelled=s.cancelled,
            sla=s.sla,
            on_enter=s.on_enter,
            on_exit=s.on_exit,
            timers=tuple(timers[n]),
        )
        for n, s in states.items()
    }

    # Reachability from the initial state, over event and timer transitions alike.
    reached = {initial}
    frontier = [initial]
    while frontier:
        current = frontier.pop()
        for t in transitions:
            if current in t.sources:
                nxt = t.target_from(current)
                if nxt not in reached:
                    reached.add(nxt)
                    frontier.append(nxt)
    for state_name in states:
        if state_name not in reached:
            raise fail(
                f"unreachable from the initial state '{initial}'; add a transition into it "
                "or remove it",
                state_name,
            )

    events_map = getattr(cls, "events", {})
    payload_schemas: dict[str, type[BaseModel]] = {}
    for event_type, schema in events_map.items():
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise fail(f"events['{event_type}'] must be a pydantic BaseModel subclass")
        payload_schemas[event_type] = schema
    handled = {t.event for t in transitions if t.event is not None}
    start_event = getattr(cls, "start_event", None)
    for event_type in sorted(handled | set(payload_schemas) | {start_event or ""}):
        if event_type.startswith(RESERVED_EVENT_PREFIX) and event_type != CANCEL_EVENT:
            raise fail(
                f"event type '{event_type}' is reserved: types starting with "
                f"'{RESERVED_EVENT_PREFIX}' are Conveyor's own (declare an operator cancel "
                "with on_cancel)"
            )
    unused = sorted(set(events_map) - handled - {start_event})
    if unused:
        names = ", ".join(f"'{e}'" for e in unused)
        raise fail(
            f"events declares a payload schema for {names}, which no transition handles and "
            "which is not the start_event (a misspelt event type would turn its validation "
            "off silently); fix the name or remove the entry"
        )
    if CANCEL_EVENT in handled:
        payload_schemas.setdefault(CANCEL_EVENT, OperatorCancel)
    for event_type in handled:
        payload_schemas.setdefault(event_type, EmptyPayload)
    validated = frozenset(
        e
        for e, schema in payload_schemas.items()
        if schema.model_fields or schema.model_config.get("extra") == "forbid"
    )

    candidates: dict[tuple[str, str], list[TransitionSpec]] = {}
    fallbacks: dict[tuple[str, str], list[TransitionSpec]] = {}
    for t in transitions:
        if t.event is None:
            continue
        table = fallbacks if t.any_state else candidates
        for source in t.sources:
            table.setdefault((source, t.event), []).append(t)
    for table in (candidates, fallbacks):
        for (source, event_type), options in table.items():
            for position, option in enumerate(options[:-1]):
                if option.guard is None:
                    shadowed = options[position + 1]
                    if option.name == shadowed.name:  # two alternatives of one transition
                        raise fail(
                            f"{labels[id(shadowed)]} for '{event_type}' can never fire: "
                            f"alternative {positions[id(option)]} before it has no guard and "
                            "always wins; add a guard or reorder",
                            source,
                        )
                    raise fail(
                        f"{labels[id(shadowed)]} for '{event_type}' can never fire: the "
                        f"unguarded {labels[id(option)]} before it always wins; add a guard "
                        "or reorder",
                        source,
                    )

    def route(t: TransitionSpec, source: str) -> Route:
        target = t.target_from(source)
        internal = t.target is None
        leaving, entering = state_specs[source], state_specs[target]
        exit_hooks = () if internal else leaving.on_exit
        enter_hooks = () if internal else entering.on_enter
        return Route(
            transition=t,
            from_state=source,
            to_state=target,
            exit_hooks=exit_hooks,
            enter_hooks=enter_hooks,
            timers_to_cancel=() if internal else tuple(x.name for x in leaving.timers),
            timers_to_set=() if internal else entering.timers,
            finished=target in finals,
            cancels=states[target].cancelled,
            needs_context=bool(t.guard or t.action or exit_hooks or enter_hooks),
        )

    routes: dict[tuple[str, str], tuple[Route, ...]] = {}
    for key in candidates.keys() | fallbacks.keys():
        source = key[0]
        own = candidates.get(key, [])
        options = list(own)
        if not own or own[-1].guard is not None:
            options += fallbacks.get(key, [])
        routes[key] = tuple(route(t, source) for t in options)
    timer_routes = {
        (t.sources[0], t.timer): route(t, t.sources[0]) for t in transitions if t.timer is not None
    }
    # What clients may send in each state: the operator's cancel is not theirs to send.
    allowed = {
        n: tuple(sorted(e for (s, e) in routes if s == n and e != CANCEL_EVENT)) for n in states
    }

    return WorkflowSpec(
        name=name,
        version=version,
        description=getattr(cls, "description", "") or (cls.__doc__ or "").strip(),
        data_schema=data_schema,
        states=state_specs,
        initial=initial,
        finals=finals,
        slas={n: s.sla for n, s in states.items() if s.sla is not None},
        transitions=tuple(transitions),
        payload_schemas=payload_schemas,
        validated_events=validated,
        routes=routes,
        timer_routes=timer_routes,
        allowed_events=allowed,
        handled_events=frozenset(handled) | ({start_event} if start_event else frozenset()),
        start_event=start_event,
        key_reuse=key_reuse,
    )
