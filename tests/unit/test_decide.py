"""The pure step: accepted transitions, rejections, hooks, timers and failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, Field

from engine.decide import (
    START_TRANSITION,
    ActionFailed,
    Decision,
    EventTrigger,
    Rejection,
    Snapshot,
    TimerToSet,
    TimerTrigger,
    decide,
    initial_decision,
)
from engine.dsl import ActionContext, GuardContext, RetryPolicy, State, Workflow, on_any
from engine.errors import UnknownState

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Line(BaseModel):
    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class Ticket(BaseModel):
    size: int = 0
    log: list[str] = []


class Sized(BaseModel):
    size: int
    lines: list[Line] = []


def log(entry: str) -> Any:
    async def hook(ctx: ActionContext[Ticket, Any]) -> None:
        ctx.data.log.append(entry)

    return hook


def big(ctx: GuardContext[Ticket, Sized]) -> bool:
    return ctx.payload.size >= 10


async def medium(ctx: GuardContext[Ticket, Sized]) -> bool:
    return ctx.payload.size >= 5


async def record_size(ctx: ActionContext[Ticket, Sized]) -> None:
    ctx.data.size = ctx.payload.size
    ctx.data.log.append("action")
    ctx.emit("ticket.sized", {"size": ctx.payload.size})
    ctx.command("team.notify", Line(sku="x", quantity=1), topic="team-commands")


def explode(ctx: ActionContext[Ticket, Any]) -> None:
    raise RuntimeError("boom")


FLAKY = RetryPolicy(attempts=7)


class Support(Workflow[Ticket]):
    name = "support"
    data_schema = Ticket
    events = {"ticket.sized": Sized}

    new = State(initial=True, on_enter=[log("enter new")], on_exit=[log("exit new")])
    small = State(on_enter=[log("enter small")])
    large = State(on_enter=[log("enter large")])
    triage = State()
    working = State(on_exit=[log("exit working")])
    closed = State(final=True)

    size = (
        new.on("ticket.sized").to(large, guard=big, action=record_size)
        | new.on("ticket.sized").to(triage, guard=medium, action=record_size)
        | new.on("ticket.sized").to(small, guard=lambda ctx: ctx.payload.size > 0)
    )
    start = on_any("ticket.started").to(working)
    ping = working.on("ticket.pinged").to(working, action=log("ping"))
    comment = working.on("ticket.commented").internal(action=log("comment"))
    crash = working.on("ticket.crashed").to(closed, action=explode, retry=FLAKY)
    reminder = working.after(timedelta(hours=2), name="reminder").to(working)
    auto_close = working.after(timedelta(days=3), name="auto_close").to(closed)
    close = on_any("ticket.closed").to(closed)


def snap(state: str, **data: Any) -> Snapshot:
    return Snapshot(state, Ticket(**data).model_dump(mode="json"), 1)


def event(type_: str, payload: dict[str, Any] | None = None, event_id: str = "e-1") -> EventTrigger:
    return EventTrigger(event_id, type_, payload or {})


async def accepted(snapshot: Snapshot, trigger: EventTrigger | TimerTrigger) -> Decision:
    result = await decide(Support, snapshot, trigger, NOW)
    assert isinstance(result, Decision), result
    return result


async def rejected(snapshot: Snapshot, trigger: EventTrigger | TimerTrigger) -> Rejection:
    result = await decide(Support, snapshot, trigger, NOW)
    assert isinstance(result, Rejection), result
    return result


async def test_unguarded_transition_moves_state_and_keeps_data() -> None:
    snapshot = snap("triage", size=3)
    decision = await accepted(snapshot, event("ticket.started"))
    assert (decision.from_state, decision.to_state, decision.transition) == (
        "triage",
        "working",
        "start",
    )
    assert decision.data == snapshot.data
    assert decision.outbound == ()
    assert not decision.finished


async def test_first_passing_guard_wins_in_declaration_order() -> None:
    assert (await accepted(snap("new"), event("ticket.sized", {"size": 12}))).to_state == "large"
    assert (await accepted(snap("new"), event("ticket.sized", {"size": 7}))).to_state == "triage"
    assert (await accepted(snap("new"), event("ticket.sized", {"size": 1}))).to_state == "small"


async def test_async_guard_is_awaited() -> None:
    decision = await accepted(snap("new"), event("ticket.sized", {"size": 5}))
    assert decision.to_state == "triage"


async def test_no_passing_guard_is_a_guard_refused_rejection() -> None:
    rejection = await rejected(snap("new"), event("ticket.sized", {"size": 0}))
    assert rejection.reason == "guard_refused"
    assert "support v1" in rejection.message
    assert "'new'" in rejection.message


async def test_hooks_and_action_run_exit_action_enter_in_order() -> None:
    decision = await accepted(snap("new"), event("ticket.sized", {"size": 10}))
    assert decision.data["log"] == ["exit new", "action", "enter large"]
    assert decision.data["size"] == 10


async def test_action_emits_events_and_commands_with_deterministic_ids() -> None:
    trigger = event("ticket.sized", {"size": 10}, event_id="evt-42")
    first = await accepted(snap("new"), trigger)
    again = await accepted(snap("new"), trigger)
    assert [(m.kind, m.type, m.topic) for m in first.outbound] == [
        ("event", "ticket.sized", None),
        ("command", "team.notify", "team-commands"),
    ]
    assert first.outbound[1].payload == {"sku": "x", "quantity": 1}
    assert first.outbound == again.outbound
    assert len({m.message_id for m in first.outbound}) == 2
    other = await accepted(snap("new"), event("ticket.sized", {"size": 10}, event_id="evt-43"))
    assert other.outbound[0].message_id != first.outbound[0].message_id


async def test_entering_a_state_sets_its_timers_due_from_now() -> None:
    decision = await accepted(snap("triage"), event("ticket.started"))
    assert decision.timers_to_set == (
        TimerToSet("reminder", "working", NOW + timedelta(hours=2), "reminder"),
        TimerToSet("auto_close", "working", NOW + timedelta(days=3), "auto_close"),
    )
    assert decision.timers_to_cancel == ()


async def test_leaving_a_state_cancels_its_timers() -> None:
    decision = await accepted(snap("working"), event("ticket.closed"))
    assert decision.timers_to_cancel == ("reminder", "auto_close")
    assert decision.timers_to_set == ()
    assert decision.finished


async def test_self_transition_runs_hooks_and_resets_timers() -> None:
    decision = await accepted(snap("working"), event("ticket.pinged"))
    assert decision.to_state == "working"
    assert decision.data["log"] == ["exit working", "ping"]
    assert decision.timers_to_cancel == ("reminder", "auto_close")
    assert [t.name for t in decision.timers_to_set] == ["reminder", "auto_close"]


async def test_internal_transition_keeps_timers_and_skips_hooks() -> None:
    decision = await accepted(snap("working"), event("ticket.commented"))
    assert decision.data["log"] == ["comment"]
    assert decision.timers_to_cancel == ()
    assert decision.timers_to_set == ()


async def test_timer_fires_its_transition() -> None:
    decision = await accepted(snap("working"), TimerTrigger("t-1", "auto_close", "working"))
    assert decision.to_state == "closed"
    assert decision.history.trigger_type == "timer"
    assert decision.history.event_type == "auto_close"


async def test_timer_of_a_state_already_left_is_stale() -> None:
    rejection = await rejected(snap("triage"), TimerTrigger("t-1", "auto_close", "working"))
    assert rejection.reason == "stale_timer"
    assert "'working'" in rejection.message
    assert "'triage'" in rejection.message


async def test_unknown_timer_name_is_stale() -> None:
    rejection = await rejected(snap("working"), TimerTrigger("t-1", "nope", "working"))
    assert rejection.reason == "stale_timer"


async def test_any_trigger_on_a_finished_instance_is_rejected_as_finished() -> None:
    assert (await rejected(snap("closed"), event("ticket.started"))).reason == "finished"
    timer = TimerTrigger("t", "reminder", "closed")
    assert (await rejected(snap("closed"), timer)).reason == "finished"


async def test_invalid_payload_lists_field_paths() -> None:
    payload = {"size": "lots", "lines": [{"sku": "", "quantity": 1}]}
    rejection = await rejected(snap("new"), event("ticket.sized", payload))
    assert rejection.reason == "invalid_payload"
    assert {e.path for e in rejection.field_errors} == {"size", "lines.0.sku"}
    assert "lines.0.sku" in rejection.message


async def test_event_not_allowed_in_state_lists_allowed_events() -> None:
    rejection = await rejected(snap("new"), event("ticket.pinged"))
    assert rejection.reason == "not_allowed"
    assert rejection.message == (
        "support v1: can't apply 'ticket.pinged' in state 'new'; "
        "allowed here: ticket.closed, ticket.sized, ticket.started"
    )
    assert rejection.allowed_events == ("ticket.closed", "ticket.sized", "ticket.started")


async def test_unknown_event_type_is_rejected() -> None:
    rejection = await rejected(snap("new"), event("ticket.teleported"))
    assert rejection.reason == "unknown_event"
    assert rejection.event_type == "ticket.teleported"


async def test_raising_action_becomes_action_failed_with_retry_policy() -> None:
    with pytest.raises(ActionFailed) as caught:
        await decide(Support, snap("working"), event("ticket.crashed"), NOW)
    failure = caught.value
    assert (failure.workflow, failure.transition, failure.state) == (
        "support v1",
        "crash",
        "working",
    )
    assert failure.retry == FLAKY
    assert isinstance(failure.__cause__, RuntimeError)


async def test_raising_guard_becomes_action_failed() -> None:
    def broken(ctx: GuardContext[Ticket, Any]) -> bool:
        raise ValueError("bad guard")

    class Guarded(Workflow[Ticket]):
        name = "guarded"
        data_schema = Ticket
        a = State(initial=True)
        b = State(final=True)
        go = a.on("go").to(b, guard=broken)

    with pytest.raises(ActionFailed, match="bad guard"):
        await decide(Guarded, Snapshot("a", {}, 1), event("go"), NOW)


async def test_decide_does_not_mutate_the_snapshot() -> None:
    snapshot = snap("new", log=["before"])
    original = {"size": 0, "log": ["before"]}
    await accepted(snapshot, event("ticket.sized", {"size": 10}))
    assert snapshot.data == original


async def test_history_entry_describes_the_step() -> None:
    decision = await accepted(snap("triage"), event("ticket.started", event_id="e-9"))
    history = decision.history
    assert (history.event_id, history.trigger_type, history.event_type) == (
        "e-9",
        "event",
        "ticket.started",
    )
    assert (history.from_state, history.to_state, history.transition) == (
        "triage",
        "working",
        "start",
    )
    assert history.occurred_at == NOW


async def test_snapshot_in_an_undeclared_state_raises() -> None:
    with pytest.raises(UnknownState, match=r"support v1.*'ghost'"):
        await decide(Support, snap("ghost"), event("ticket.started"), NOW)


async def test_initial_decision_runs_enter_hooks_and_validates_data() -> None:
    decision = await initial_decision(Support, {"size": 1}, event_id="start-1", now=NOW)
    assert isinstance(decision, Decision)
    assert (decision.from_state, decision.to_state) == ("", "new")
    assert decision.data == {"size": 1, "log": ["enter new"]}
    assert decision.history.trigger_type == "start"
    assert decision.transition == START_TRANSITION


async def test_initial_decision_rejects_invalid_data_with_field_paths() -> None:
    rejection = await initial_decision(Support, {"size": "x"}, event_id="s", now=NOW)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "invalid_payload"
    assert [e.path for e in rejection.field_errors] == ["size"]


async def test_permissive_payload_reaches_actions_for_schemaless_events() -> None:
    seen: list[Any] = []

    async def remember(ctx: ActionContext[Ticket, Any]) -> None:
        seen.append(ctx.payload.model_dump())

    class Loose(Workflow[Ticket]):
        name = "loose"
        data_schema = Ticket
        a = State(initial=True)
        b = State(final=True)
        go = a.on("go").to(b, action=remember)

    await decide(Loose, Snapshot("a", {}, 1), event("go", {"anything": 1}), NOW)
    assert seen == [{"anything": 1}]
