"""Describing workflow definitions: a JSON document for the API and a Mermaid diagram."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import Any

from engine.dsl import CANCEL_EVENT, Workflow
from engine.spec import TransitionSpec, WorkflowSpec

HIGHLIGHT_CLASS = "current"
VISITED_CLASS = "visited"


def describe(definition: type[Workflow[Any]]) -> dict[str, Any]:
    """A JSON-able description: states, transitions, events with payload JSON Schemas,
    the data schema, timers (delays in seconds) and the start event."""
    spec = definition.spec
    timers = [
        {
            "name": timer.name,
            "state": timer.state,
            "delay_seconds": timer.delay.total_seconds(),
            "transition": timer.transition,
        }
        for state in spec.states.values()
        for timer in state.timers
    ]
    return {
        "name": spec.name,
        "version": spec.version,
        "description": spec.description,
        "initial_state": spec.initial,
        "start_event": spec.start_event,
        "states": [
            {
                "name": state.name,
                "initial": state.initial,
                "final": state.final,
                "cancelled": state.cancelled,
                "sla_seconds": None if state.sla is None else state.sla.total_seconds(),
                "operator_cancel": (state.name, CANCEL_EVENT) in spec.routes,
                "description": state.description,
                "timers": [t.name for t in state.timers],
                "allowed_events": list(spec.allowed_events[state.name]),
            }
            for state in spec.states.values()
        ],
        "transitions": [_transition(t) for t in spec.transitions],
        "events": {
            event_type: {"payload_schema": schema.model_json_schema()}
            for event_type, schema in sorted(spec.payload_schemas.items())
        },
        "data_schema": spec.data_schema.model_json_schema(),
        "timers": timers,
    }


def _transition(transition: TransitionSpec) -> dict[str, Any]:
    return {
        "name": transition.name,
        "event": transition.event,
        "timer": transition.timer,
        "from": list(transition.sources),
        "from_any_state": transition.any_state,
        "to": transition.target,
        "internal": transition.target is None,
        "guarded": transition.guard is not None,
        "guard": _callable_name(transition.guard),
        "has_action": transition.action is not None,
        "description": transition.description,
        "retry": {
            "attempts": transition.retry.attempts,
            "initial_backoff_seconds": transition.retry.initial_backoff.total_seconds(),
            "multiplier": transition.retry.multiplier,
            "max_backoff_seconds": transition.retry.max_backoff.total_seconds(),
        },
    }


def mermaid(
    definition: type[Workflow[Any]],
    highlight: str | None = None,
    visited: Collection[str] = (),
) -> str:
    """A Mermaid ``stateDiagram-v2``; ``highlight`` marks one state (an instance's current
    one), ``visited`` the states it passed through (drawn in a second, quieter style; the
    highlighted state keeps its own). Unknown states are a ``ValueError``.

    Edges are labelled with the event type (plus the guard's name) or ``after 30m``.
    """
    spec = definition.spec
    lines = ["stateDiagram-v2", f"    [*] --> {spec.initial}"]
    for state in spec.states.values():
        if state.description:
            lines.append(f"    {state.name} : {_clean(state.description)}")
    for transition in spec.transitions:
        for source in transition.sources:
            label = _edge_label(spec, transition)
            lines.append(f"    {source} --> {transition.target_from(source)} : {label}")
    lines.extend(f"    {state} --> [*]" for state in spec.states if state in spec.finals)
    unknown = sorted({*visited, *([highlight] if highlight is not None else [])} - set(spec.states))
    if unknown:
        raise ValueError(
            f"{spec.label}: cannot highlight unknown state {', '.join(map(repr, unknown))}"
        )
    passed = [state for state in spec.states if state in visited and state != highlight]
    if passed:
        lines.append(f"    classDef {VISITED_CLASS} fill:#e3f2fd,stroke:#1565c0,stroke-width:2px")
        lines.append(f"    class {','.join(passed)} {VISITED_CLASS}")
    if highlight is not None:
        lines.append(f"    classDef {HIGHLIGHT_CLASS} fill:#ffd54f,stroke:#e65100,stroke-width:3px")
        lines.append(f"    class {highlight} {HIGHLIGHT_CLASS}")
    return "\n".join(lines) + "\n"


def _edge_label(spec: WorkflowSpec, transition: TransitionSpec) -> str:
    if transition.timer is not None:
        state = spec.states[transition.sources[0]]
        delay = next(t.delay for t in state.timers if t.name == transition.timer)
        return f"after {format_delay(delay)}"
    label = "operator cancel" if transition.event == CANCEL_EVENT else transition.event or ""
    guard = _callable_name(transition.guard)
    if guard is not None:
        label += f" if {guard}"
    return label


def format_delay(delay: timedelta) -> str:
    """``30m``, ``24h``, ``7d``, ``1h30m``, ``45s``: compact, for diagram labels."""
    seconds = int(delay.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


def _callable_name(value: object) -> str | None:
    if value is None:
        return None
    name = str(getattr(value, "__name__", None) or type(value).__name__)
    return "guard" if name == "<lambda>" else name


def _clean(text: str) -> str:
    # A newline, colon or semicolon would end or split the Mermaid statement.
    return " ".join(text.split()).replace(":", " -").replace(";", ",")
