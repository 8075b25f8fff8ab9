"""The building blocks of a workflow declaration: states, routes, retries, contexts.

What a workflow class body is made of, below both the public `engine.dsl` (which
re-exports all of it and defines `Workflow`) and `engine.spec` (which compiles a class
body made of these into lookup tables): `State` and its routes (`on`, `on_any`,
``state.after``) that complete into `Transitions`; `RetryPolicy`; `EmptyPayload`; and
the contexts guards and actions receive. Declare workflows through `engine.dsl`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from engine.errors import DefinitionError

DataT = TypeVar("DataT", bound=BaseModel)
PayloadT = TypeVar("PayloadT", bound=BaseModel)

MessageKind = Literal["event", "command"]


class EmptyPayload(BaseModel):
    """Payload of an event declared without a schema (and of timers): accepts any fields."""

    model_config = ConfigDict(extra="allow", frozen=True)


class OperatorCancel(BaseModel):
    """Payload of ``conveyor.cancel``, the event an operator's cancel sends."""

    model_config = ConfigDict(frozen=True)

    reason: str = ""


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

    __slots__ = (
        "cancelled",
        "description",
        "final",
        "initial",
        "name",
        "on_enter",
        "on_exit",
        "sla",
    )

    def __init__(
        self,
        description: str = "",
        *,
        initial: bool = False,
        final: bool = False,
        cancelled: bool = False,
        sla: timedelta | None = None,
        on_enter: Sequence[Action] = (),
        on_exit: Sequence[Action] = (),
    ) -> None:
        """``final``: the workflow ends here, and the instance is ``completed``.
        ``cancelled``: a final state whose instances are ``cancelled`` (not ``completed``),
        so that ``?status=cancelled`` finds every cancelled instance, however it ended.
        ``sla``: how long an instance should stay here at most; past it, the instance is
        reported as breaching its SLA (``sla_breached``, ``/v1/stats``, metrics)."""
        self.description = description
        self.initial = initial
        self.final = final or cancelled
        self.cancelled = cancelled
        self.sla = sla
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


CANCEL_EVENT = "conveyor.cancel"
"""The event an operator's cancel sends (``POST /v1/instances/{id}/cancel``); its payload
is ``{"reason": str}``. Routes for it are declared with :func:`on_cancel`."""


def on_cancel(*sources: State) -> EventRoute:
    """What an operator's cancel does in ``sources`` (every non-final state when none are
    named): a transition to a final state whose action compensates, e.g. refunds a paid
    order. Where no such route applies, the cancel only sets the status to ``cancelled``.
    """
    return EventRoute(CANCEL_EVENT, sources or None)


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
