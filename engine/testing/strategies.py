"""Property-based helpers for the test kit: random valid event sequences (hypothesis).

Which events are valid depends on the state an instance is in, so a sequence is drawn
step by step while it runs: :func:`steps` is the strategy of one step in a state (an event
the state allows, with a payload, or letting one of its timers come due), and
:func:`random_walk` drives an instance through a :class:`WorkflowEnvironment` with
hypothesis' ``data()``::

    @given(st.data())
    async def test_orders_only_visit_declared_states(data: st.DataObject) -> None:
        env = WorkflowEnvironment(Order)
        order = await env.start(Order, "o-1", ORDER)
        for step in await random_walk(env, order, data, payloads=PAYLOADS):
            assert step.state_after in Order.spec.states

Payloads come from the strategies given per event type; an event without one gets
:func:`payloads_for` its schema (required fields only, drawn from their types and kept
when the schema accepts them: give a strategy for fields with patterns or cross-field
rules). Needs hypothesis (a test dependency): import this module from tests only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from engine.model import InstanceStatus, Outcome
from engine.registry import WorkflowDefinition
from engine.spec import WorkflowSpec
from engine.testing.environment import Fired, Handle, WorkflowEnvironment

PayloadStrategies = Mapping[str, st.SearchStrategy[Mapping[str, Any]]]
"""A payload strategy per event type."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a walk: an event (``type`` and ``payload``) or a timer coming due
    (``kind="timer"``, ``type`` its name)."""

    kind: Literal["event", "timer"]
    type: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Taken:
    """A step taken by :func:`random_walk`, and what it did."""

    step: Step
    state_before: str
    state_after: str
    outcome: Outcome | None  # an event's outcome
    fired: tuple[Fired, ...] = ()  # a timer step's firings


def payloads_for(model: type[BaseModel]) -> st.SearchStrategy[Mapping[str, Any]]:
    """Payloads for ``model``: its required fields drawn from their types, kept when the
    model accepts them, as JSON (what an event carries)."""
    fields = {
        name: st.from_type(info.annotation)  # type: ignore[arg-type]
        for name, info in model.model_fields.items()
        if info.is_required() and info.annotation is not None
    }

    def valid(values: Mapping[str, Any]) -> bool:
        try:
            model.model_validate(dict(values))
        except ValidationError:
            return False
        return True

    return (
        st.fixed_dictionaries(fields)
        .filter(valid)
        .map(lambda values: model.model_validate(dict(values)).model_dump(mode="json"))
    )


def steps(
    workflow: WorkflowDefinition | WorkflowSpec,
    state: str,
    *,
    payloads: PayloadStrategies | None = None,
    timers: bool = True,
) -> st.SearchStrategy[Step]:
    """One step valid in ``state``: an event the state allows (with a payload from
    ``payloads``, else from its schema) or, with ``timers``, one of the state's timers
    coming due. Nothing (``st.nothing()``) in a state that allows neither."""
    spec = workflow if isinstance(workflow, WorkflowSpec) else workflow.spec
    chosen = payloads or {}
    options: list[st.SearchStrategy[Step]] = []
    for event in spec.allowed_events.get(state, ()):
        schema = spec.payload_schemas.get(event)
        strategy = chosen.get(event)
        if strategy is None:
            strategy = payloads_for(schema) if schema is not None else st.just({})
        options.append(strategy.map(_event_step(event)))
    if timers:
        for source, name in spec.timer_routes:
            if source == state:
                options.append(st.just(Step("timer", name, {})))
    return st.one_of(options) if options else st.nothing()


def _event_step(event: str) -> Callable[[Mapping[str, Any]], Step]:
    def step(payload: Mapping[str, Any]) -> Step:
        return Step("event", event, payload)

    return step


async def random_walk(
    env: WorkflowEnvironment,
    handle: Handle,
    data: st.DataObject,
    *,
    payloads: PayloadStrategies | None = None,
    max_steps: int = 20,
    timers: bool = True,
) -> list[Taken]:
    """Drive ``handle`` through up to ``max_steps`` random valid steps (see :func:`steps`),
    drawn from ``data`` in the state the instance is in at each step; stop when it has
    ended or its state allows nothing. A timer step advances the clock to that timer."""
    definition = env.registry.get(handle.instance.workflow, handle.instance.version)
    taken: list[Taken] = []
    for _ in range(max_steps):
        if handle.status is not InstanceStatus.ACTIVE:
            break
        strategy = steps(definition, handle.state, payloads=payloads, timers=timers)
        if strategy.is_empty:
            break
        step = data.draw(strategy, label=f"step in {handle.state}")
        before = handle.state
        if step.kind == "event":
            outcome = await handle.send(step.type, step.payload)
            taken.append(Taken(step, before, handle.state, outcome))
            continue
        due = [t.due_at for t in handle.timers if t.name == step.type]
        fired = tuple(await env.advance_to(max(due[0], env.now))) if due else ()
        taken.append(Taken(step, before, handle.state, None, fired))
    return taken


__all__ = ["PayloadStrategies", "Step", "Taken", "payloads_for", "random_walk", "steps"]
