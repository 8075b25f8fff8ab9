"""Declaring workflows: states, transitions, timers, schemas; validated when the class is defined.

A workflow is a class whose body reads like its state diagram::

    class Order(Workflow[OrderData]):
        name = "order"
        data_schema = OrderData
        events = {"payment.captured": PaymentCaptured}

        placed = State("Waiting for payment", initial=True)
        paid = State(on_enter=[announce_payment])
        cancelled = State(final=True)

        pay = placed.on("payment.captured").to(paid, guard=amount_matches) | placed.on(
            "payment.captured"
        ).to(payment_review)
        expire = placed.after(timedelta(minutes=30), name="payment_timeout").to(cancelled)

Defining the class compiles it into a `WorkflowSpec` (lookup tables for the pure step in
`engine.decide`) or raises `DefinitionError` naming the workflow and the state at fault.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from engine.errors import DefinitionError

DataT = TypeVar("DataT", bound=BaseModel)
PayloadT = TypeVar("PayloadT", bound=BaseModel)

MessageKind = Literal["event", "command"]


class EmptyPayload(BaseModel):
    """Payload of an event declared without a schema (and of timers): accepts any fields."""

    model_config = ConfigDict(extra="allow", frozen=True)


class GuardContext(Generic[DataT, PayloadT]):
    """What a guard sees: the instance data, the validated payload and the decision time.

    Guards decide, they do not change anything: treat ``data`` as read-only here.
    """

    __slots__ = ("data", "event_type", "now", "payload", "state")

    def __init__(
        self, data: DataT, payload: PayloadT, now: datetime, state: str, event_type: str
    ) -> None:
        self.data = data
        self.payload = payload
        self.now = now
        self.state = state
        self.event_type = event_type


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """An event or command an action asked for; `engine.decide` gives it a deterministic id."""

    kind: MessageKind
    type: str
    payload: Mapping[str, Any]
    topic: str | None


class ActionContext(GuardContext[DataT, PayloadT]):
    """What actions and on-enter/on-exit hooks see.

    ``data`` is a private, mutable copy of the instance data: changes become the new data
    of the instance. ``emit`` and ``command`` record outbound messages; nothing is sent
    here (the runtime writes them to the outbox in the same transaction as the state).
    """

    __slots__ = ("_messages", "from_state", "to_state")

    def __init__(
        self,
        data: DataT,
        payload: PayloadT,
        now: datetime,
        state: str,
        event_type: str,
        *,
        from_state: str,
        to_state: str,
    ) -> None:
        super().__init__(data, payload, now, state, event_type)
        self.from_state = from_state
        self.to_state = to_state
        self._messages: list[PendingMessage] = []

    def emit(
        self,
        type: str,
        payload: Mapping[str, Any] | BaseModel | None = None,
        *,
        topic: str | None = None,
    ) -> None:
        """Publish a domain event (something that happened) after the transition commits."""
        self._messages.append(PendingMessage("event", type, _as_json(payload), topic))

    def command(
        self,
        type: str,
        payload: Mapping[str, Any] | BaseModel | None = None,
        *,
        topic: str | None = None,
    ) -> None:
        """Ask another service to do something (e.g. ``payment.refund_requested``)."""
        self._messages.append(PendingMessage("command", type, _as_json(payload), topic))

    @property
    def messages(self) -> tuple[PendingMessage, ...]:
        """Messages recorded so far, in order."""
        return tuple(self._messages)


def _as_json(payload: Mapping[str, Any] | BaseModel | None) -> Mapping[str, Any]:
    if payload is None:
        return {}
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    return dict(payload)


Guard = Callable[[GuardContext[Any, Any]], bool | Awaitable[bool]]
"""A predicate over data and payload; sync or async. The first passing guard wins."""

Action = Callable[[ActionContext[Any, Any]], Awaitable[None] | None]
"""An action or hook: changes data and records messages; sync or async; no I/O."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the runtime retries a transition whose guard, action or hook raised.

    ``attempts`` counts the first try. Backoff grows by ``multiplier`` up to ``max_backoff``.
    """

    attempts: int = 3
    initial_backoff: timedelta = timedelta(seconds=1)
    multiplier: float = 2.0
    max_backoff: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise DefinitionError(f"RetryPolicy: attempts must be >= 1, got {self.attempts}")
        if self.multiplier < 1:
            raise DefinitionError(f"RetryPolicy: multiplier must be >= 1, got {self.multiplier}")
        if self.initial_backoff < timedelta(0) or self.max_backoff < self.initial_backoff:
            raise DefinitionError("RetryPolicy: need 0 <= initial_backoff <= max_backoff")

    def backoff(self, retry: int) -> timedelta:
        """Delay before retry number ``retry`` (1 = the first retry after the first failure)."""
        delay = self.initial_backoff * (self.multiplier ** max(retry - 1, 0))
        return min(delay, self.max_backoff)


DEFAULT_RETRY = RetryPolicy()


class State:
    """A state in a workflow class body; its name is the attribute name."""

    __slots__ = ("description", "final", "initial", "name", "on_enter", "on_exit")

    def __init__(
        self,
        description: str = "",
        *,
        initial: bool = False,
        final: bool = False,
        on_enter: Sequence[Action] = (),
        on_exit: Sequence[Action] = (),
    ) -> None:
        self.description = description
        self.initial = initial
        self.final = final
        self.on_enter = tuple(on_enter)
        self.on_exit = tuple(on_exit)
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        if not self.name:
            self.name = name

    def __repr__(self) -> str:
        return f"State({self.name or '?'})"

    def on(self, event: str) -> EventRoute:
        """Transitions leaving this state when ``event`` arrives."""
        return EventRoute(event, (self,))

    def after(self, delay: timedelta, *, name: str) -> TimerRoute:
        """A transition fired ``delay`` after this state was entered (unless left before)."""
        return TimerRoute(self, delay, name)


def on(event: str, *sources: State) -> EventRoute:
    """Transitions leaving any of ``sources`` when ``event`` arrives."""
    if not sources:
        raise DefinitionError(f"on({event!r}): name at least one source state, or use on_any")
    return EventRoute(event, sources)


def on_any(event: str) -> EventRoute:
    """Transitions leaving every non-final state that has no unguarded transition of its own
    for ``event`` (a fallback such as cancellation)."""
    return EventRoute(event, None)


@dataclass(frozen=True, slots=True, eq=False)
class Transition:
    """One arrow of the diagram, before compilation. ``target=None`` means internal."""

    event: str | None
    timer: Timer | None
    sources: tuple[State, ...] | None  # None: any non-final state
    target: State | None
    guard: Guard | None
    action: Action | None
    retry: RetryPolicy
    description: str


@dataclass(frozen=True, slots=True)
class Timer:
    state: State
    delay: timedelta
    name: str


class Transitions:
    """One or more transitions under one name; ``a | b`` lists ordered alternatives."""

    __slots__ = ("items", "name")

    def __init__(self, items: tuple[Transition, ...]) -> None:
        self.items = items
        self.name = ""

    def __or__(self, other: Transitions) -> Transitions:
        return Transitions(self.items + other.items)

    def __set_name__(self, owner: type, name: str) -> None:
        if not self.name:
            self.name = name


class EventRoute:
    """``state.on(event)``: completes into transitions with `to` or `internal`."""

    __slots__ = ("event", "sources")

    def __init__(self, event: str, sources: tuple[State, ...] | None) -> None:
        self.event = event
        self.sources = sources

    def to(
        self,
        target: State,
        *,
        guard: Guard | None = None,
        action: Action | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        description: str = "",
    ) -> Transitions:
        """Move to ``target`` (exit hooks, action, enter hooks, timers reset)."""
        return Transitions(
            (Transition(self.event, None, self.sources, target, guard, action, retry, description),)
        )

    def internal(
        self,
        *,
        guard: Guard | None = None,
        action: Action | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        description: str = "",
    ) -> Transitions:
        """Stay in the state without leaving it: no hooks run and its timers keep running."""
        return Transitions(
            (Transition(self.event, None, self.sources, None, guard, action, retry, description),)
        )


class TimerRoute:
    """``state.after(delay, name=...)``: completes into a timer transition with `to`."""

    __slots__ = ("timer",)

    def __init__(self, state: State, delay: timedelta, name: str) -> None:
        self.timer = Timer(state, delay, name)

    def to(
        self,
        target: State,
        *,
        action: Action | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        description: str = "",
    ) -> Transitions:
        timer = self.timer
        return Transitions(
            (Transition(None, timer, (timer.state,), target, None, action, retry, description),)
        )


# ---------------------------------------------------------------- compiled form


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
    transitions: tuple[TransitionSpec, ...]
    payload_schemas: Mapping[str, type[BaseModel]]
    validated_events: frozenset[str]  # events whose payload must be validated up front
    routes: Mapping[tuple[str, str], tuple[Route, ...]]  # (state, event) -> alternatives
    timer_routes: Mapping[tuple[str, str], Route]  # (state, timer name) -> route
    allowed_events: Mapping[str, tuple[str, ...]]
    handled_events: frozenset[str]
    start_event: str | None

    @property
    def label(self) -> str:
        """``order v1``: how messages name the workflow."""
        return f"{self.name} v{self.version}"


_RESERVED = frozenset(
    {"name", "version", "description", "data_schema", "events", "start_event", "spec"}
)


class Workflow(Generic[DataT]):
    """Base class of workflow definitions; subclasses are validated and compiled on definition.

    ``DataT`` documents the data model (set ``data_schema`` to the same class).
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    description: ClassVar[str] = ""
    data_schema: ClassVar[type[BaseModel]]
    events: ClassVar[Mapping[str, type[BaseModel]]] = {}
    start_event: ClassVar[str | None] = None
    """An event type (from Kafka) that starts a new instance of this workflow."""
    spec: ClassVar[WorkflowSpec]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.spec = _compile(cls)

    @classmethod
    def initial_data_from(cls, start_payload: Mapping[str, Any]) -> Mapping[str, Any]:
        """Turn a ``start_event`` payload into initial data; override to reshape it."""
        return start_payload


def _compile(cls: type[Workflow[Any]]) -> WorkflowSpec:
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

    initials = [n for n, s in states.items() if s.initial]
    if len(initials) != 1:
        found = ", ".join(initials) or "none"
        raise fail(f"needs exactly one initial state (State(initial=True)); found: {found}")
    initial = initials[0]
    for state_name, state in states.items():
        if state.initial and state.final:
            raise fail("the initial state cannot be final", state_name)
    finals = frozenset(n for n, s in states.items() if s.final)
    non_finals = tuple(n for n in states if n not in finals)

    def resolve(state: State, role: str, transition: str) -> str:
        found = state_names.get(id(state))
        if found is None:
            raise fail(
                f"transition '{transition}' {role} a state that is not declared in this class "
                f"({state!r}); assign it to an attribute of {cls.__qualname__}",
                state.name or None,
            )
        return found

    seen: set[int] = set()
    transitions: list[TransitionSpec] = []
    timers: dict[str, list[TimerSpec]] = {n: [] for n in states}
    for group_name, group in groups.items():
        for item in group.items:
            if id(item) in seen:
                raise fail(f"transition '{group_name}' reuses a transition declared elsewhere")
            seen.add(id(item))
            any_state = item.sources is None
            sources = (
                non_finals
                if item.sources is None
                else tuple(resolve(s, "leaves", group_name) for s in item.sources)
            )
            target = None if item.target is None else resolve(item.target, "enters", group_name)
            for source in sources:
                if source in finals:
                    raise fail(
                        f"transition '{group_name}' leaves a final state; final states "
                        "have no outgoing transitions",
                        source,
                    )
            timer_name = None
            if item.timer is not None:
                timer = item.timer
                timer_name = timer.name
                source = sources[0]
                if source in finals:
                    raise fail(f"timer '{timer.name}' on a final state never fires", source)
                if timer.delay <= timedelta(0):
                    raise fail(f"timer '{timer.name}' needs a positive delay", source)
                if any(t.name == timer.name for t in timers[source]):
                    raise fail(f"duplicate timer name '{timer.name}'", source)
                timers[source].append(TimerSpec(timer.name, source, timer.delay, group_name))
            transitions.append(
                TransitionSpec(
                    name=group_name,
                    event=item.event,
                    timer=timer_name,
                    sources=sources,
                    target=target,
                    any_state=any_state,
                    guard=item.guard,
                    action=item.action,
                    retry=item.retry,
                    description=item.description,
                )
            )

    state_specs = {
        n: StateSpec(
            name=n,
            initial=s.initial,
            final=s.final,
            description=s.description,
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
                    raise fail(
                        f"transition '{shadowed.name}' for '{event_type}' can never fire: "
                        f"the unguarded transition '{option.name}' before it always wins; "
                        "add a guard or reorder",
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
    allowed = {n: tuple(sorted(e for (s, e) in routes if s == n)) for n in states}

    return WorkflowSpec(
        name=name,
        version=version,
        description=getattr(cls, "description", "") or (cls.__doc__ or "").strip(),
        data_schema=data_schema,
        states=state_specs,
        initial=initial,
        finals=finals,
        transitions=tuple(transitions),
        payload_schemas=payload_schemas,
        validated_events=validated,
        routes=routes,
        timer_routes=timer_routes,
        allowed_events=allowed,
        handled_events=frozenset(handled) | ({start_event} if start_event else frozenset()),
        start_event=start_event,
    )
