"""The pure part of an operator's move: hooks only when asked, exit before enter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from engine.decide import (
    MOVE_EVENT,
    MOVE_TRANSITION,
    ActionFailed,
    Snapshot,
    TimerToSet,
    move_decision,
)
from engine.dsl import ActionContext, State, Workflow
from engine.errors import UnknownState

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Trail(BaseModel):
    steps: list[str] = []
    fail: bool = False


def left(ctx: ActionContext[Trail, Any]) -> None:
    ctx.data.steps.append(f"exit {ctx.state}")
    ctx.emit("trail.left", {"from": ctx.from_state, "to": ctx.to_state})


async def entered(ctx: ActionContext[Trail, Any]) -> None:
    ctx.data.steps.append(f"enter {ctx.state} at {ctx.now:%H:%M}")
    if ctx.data.fail:
        raise ValueError("no entry today")
    ctx.command("trail.entered", {"event": ctx.event_type})


class Trailed(Workflow[Trail]):
    name = "test.trailed"
    data_schema = Trail

    start = State(initial=True, on_exit=[left])
    middle = State(on_enter=[entered])
    end = State(cancelled=True)

    go = start.on("trail.go").to(middle)
    nudge = middle.after(timedelta(minutes=10), name="nudge").to(end)


SNAPSHOT = Snapshot("start", {"steps": [], "fail": False}, 3)


async def test_without_run_hooks_the_data_is_kept_and_nothing_is_sent() -> None:
    decision = await move_decision(Trailed, SNAPSHOT, "middle", event_id="move:1", now=NOW)
    assert decision.data is SNAPSHOT.data
    assert decision.outbound == ()
    assert decision.timers_to_set == (
        TimerToSet("nudge", "middle", NOW + timedelta(minutes=10), "nudge"),
    )
    assert (decision.from_state, decision.to_state, decision.transition) == (
        "start",
        "middle",
        MOVE_TRANSITION,
    )
    assert decision.final_status == "active"


async def test_run_hooks_runs_exit_then_enter_hooks_with_ids_from_the_event_id() -> None:
    decision = await move_decision(
        Trailed, SNAPSHOT, "middle", event_id="move:1", now=NOW, run_hooks=True
    )
    assert decision.data == {"steps": ["exit start", "enter middle at 12:00"], "fail": False}
    assert SNAPSHOT.data == {"steps": [], "fail": False}  # inputs are not mutated
    assert [(m.kind, m.type, dict(m.payload)) for m in decision.outbound] == [
        ("event", "trail.left", {"from": "start", "to": "middle"}),
        ("command", "trail.entered", {"event": MOVE_EVENT}),
    ]
    again = await move_decision(
        Trailed, SNAPSHOT, "middle", event_id="move:1", now=NOW, run_hooks=True
    )
    assert again == decision
    other = await move_decision(
        Trailed, SNAPSHOT, "middle", event_id="move:2", now=NOW, run_hooks=True
    )
    assert {m.message_id for m in other.outbound}.isdisjoint(
        m.message_id for m in decision.outbound
    )


async def test_a_move_into_a_cancelled_state_ends_it_cancelled() -> None:
    middle = Snapshot("middle", {"steps": []}, 4)
    decision = await move_decision(Trailed, middle, "end", event_id="m", now=NOW, run_hooks=True)
    assert decision.final_status == "cancelled"
    assert decision.data is middle.data  # no hooks to run: the data is kept as it is


async def test_a_raising_hook_or_an_unknown_state_fails_the_decision() -> None:
    failing = Snapshot("start", {"fail": True}, 3)
    with pytest.raises(ActionFailed, match="no entry today") as raised:
        await move_decision(Trailed, failing, "middle", event_id="m", now=NOW, run_hooks=True)
    assert (raised.value.transition, type(raised.value.error)) == (MOVE_TRANSITION, ValueError)
    with pytest.raises(UnknownState):
        await move_decision(Trailed, SNAPSHOT, "limbo", event_id="m", now=NOW, run_hooks=True)
    # An orphaned source state has no exit hooks to run.
    orphan = Snapshot("gone", {}, 1)
    decision = await move_decision(Trailed, orphan, "middle", event_id="m", now=NOW, run_hooks=True)
    assert decision.data["steps"] == ["enter middle at 12:00"]
