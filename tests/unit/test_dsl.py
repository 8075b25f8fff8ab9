"""Declaring workflows: what the DSL compiles to, and every definition it rejects."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from engine.dsl import (
    DEFAULT_RETRY,
    ActionContext,
    EmptyPayload,
    GuardContext,
    RetryPolicy,
    State,
    Workflow,
    on,
    on_any,
)
from engine.errors import DefinitionError


class Data(BaseModel):
    count: int = 0


class Ping(BaseModel):
    value: int


def is_positive(ctx: GuardContext[Data, Ping]) -> bool:
    return ctx.payload.value > 0


async def bump(ctx: ActionContext[Data, Ping]) -> None:
    ctx.data.count += 1


class Traffic(Workflow[Data]):
    """A small workflow exercising the DSL."""

    name = "traffic"
    version = 2
    data_schema = Data
    events = {"ping": Ping}

    idle = State("Waiting", initial=True)
    busy = State(on_enter=[bump], on_exit=[bump])
    review = State()
    done = State(final=True)

    start = idle.on("ping").to(busy, guard=is_positive, action=bump) | idle.on("ping").to(review)
    again = busy.on("ping").to(busy)
    note = busy.on("note").internal(action=bump)
    approve = review.on("approve").to(busy, retry=RetryPolicy(attempts=5))
    expire = busy.after(timedelta(minutes=5), name="idle_timeout").to(done)
    stop = on("stop", busy, review).to(done)
    abort = on_any("abort").to(done)


def test_state_names_come_from_attribute_names() -> None:
    assert Traffic.idle.name == "idle"
    assert list(Traffic.spec.states) == ["idle", "busy", "review", "done"]


def test_spec_records_initial_finals_and_descriptions() -> None:
    spec = Traffic.spec
    assert spec.initial == "idle"
    assert spec.finals == frozenset({"done"})
    assert spec.states["idle"].description == "Waiting"
    assert spec.description == "A small workflow exercising the DSL."
    assert spec.label == "traffic v2"


def test_alternatives_keep_declaration_order_under_one_name() -> None:
    routes = Traffic.spec.routes[("idle", "ping")]
    assert [r.to_state for r in routes] == ["busy", "review"]
    assert {r.transition.name for r in routes} == {"start"}


def test_on_with_several_sources_expands_to_each_source() -> None:
    assert Traffic.spec.routes[("busy", "stop")][0].to_state == "done"
    assert Traffic.spec.routes[("review", "stop")][0].to_state == "done"
    assert ("idle", "stop") not in Traffic.spec.routes


def test_on_any_applies_to_every_non_final_state() -> None:
    sources = {s for (s, e) in Traffic.spec.routes if e == "abort"}
    assert sources == {"idle", "busy", "review"}


def test_on_any_yields_to_a_state_own_unguarded_transition() -> None:
    class Fallback(Workflow[Data]):
        name = "fallback"
        data_schema = Data
        a = State(initial=True)
        b = State(final=True)
        c = State(final=True)
        own = a.on("cancel").to(b)
        fallback = on_any("cancel").to(c)

    assert [r.to_state for r in Fallback.spec.routes[("a", "cancel")]] == ["b"]


def test_on_any_follows_a_state_own_guarded_transition() -> None:
    class Fallback(Workflow[Data]):
        name = "fallback"
        data_schema = Data
        a = State(initial=True)
        b = State(final=True)
        c = State(final=True)
        own = a.on("cancel").to(b, guard=lambda ctx: False)
        fallback = on_any("cancel").to(c)

    assert [r.to_state for r in Fallback.spec.routes[("a", "cancel")]] == ["b", "c"]


def test_self_transition_resets_the_state_timers() -> None:
    route = Traffic.spec.routes[("busy", "ping")][0]
    assert route.to_state == "busy"
    assert route.timers_to_cancel == ("idle_timeout",)
    assert [t.name for t in route.timers_to_set] == ["idle_timeout"]
    assert route.exit_hooks
    assert route.enter_hooks


def test_internal_transition_runs_no_hooks_and_keeps_timers() -> None:
    route = Traffic.spec.routes[("busy", "note")][0]
    assert route.to_state == "busy"
    assert route.exit_hooks == route.enter_hooks == ()
    assert route.timers_to_cancel == ()
    assert route.timers_to_set == ()


def test_timers_belong_to_their_state_with_delay_and_transition() -> None:
    (timer,) = Traffic.spec.states["busy"].timers
    assert (timer.name, timer.state, timer.delay, timer.transition) == (
        "idle_timeout",
        "busy",
        timedelta(minutes=5),
        "expire",
    )
    assert Traffic.spec.timer_routes[("busy", "idle_timeout")].to_state == "done"


def test_retry_policy_defaults_and_overrides_per_transition() -> None:
    assert Traffic.spec.routes[("busy", "ping")][0].transition.retry == DEFAULT_RETRY
    assert Traffic.spec.routes[("review", "approve")][0].transition.retry.attempts == 5


def test_retry_policy_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(
        attempts=4,
        initial_backoff=timedelta(seconds=1),
        multiplier=3,
        max_backoff=timedelta(seconds=5),
    )
    assert [policy.backoff(n).total_seconds() for n in (1, 2, 3)] == [1, 3, 5]


def test_retry_policy_rejects_zero_attempts() -> None:
    with pytest.raises(DefinitionError, match="attempts"):
        RetryPolicy(attempts=0)


def test_events_without_schema_get_a_permissive_payload_model() -> None:
    assert Traffic.spec.payload_schemas["note"] is EmptyPayload
    assert Traffic.spec.payload_schemas["ping"] is Ping
    assert "ping" in Traffic.spec.validated_events
    assert "note" not in Traffic.spec.validated_events


def test_allowed_events_per_state_are_listed_sorted() -> None:
    assert Traffic.spec.allowed_events["busy"] == ("abort", "note", "ping", "stop")
    assert Traffic.spec.allowed_events["done"] == ()


def test_initial_data_from_start_event_defaults_to_the_payload() -> None:
    assert Traffic.initial_data_from({"count": 3}) == {"count": 3}


# ---------------------------------------------------------------- definition errors


def test_rejects_a_workflow_without_initial_state() -> None:
    with pytest.raises(DefinitionError, match=r"broken v1: needs exactly one initial state"):

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State()


def test_rejects_several_initial_states_naming_them() -> None:
    with pytest.raises(DefinitionError, match=r"broken v1: .*found: a, b"):

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(initial=True)
            go = a.on("go").to(b)


def test_rejects_a_transition_to_an_undeclared_state() -> None:
    elsewhere = State()
    with pytest.raises(DefinitionError) as caught:

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            go = a.on("go").to(elsewhere)

    assert str(caught.value) == (
        "broken v1: transition 'go' targets a state that is not declared in this workflow "
        "(did you forget to assign it in the class body?)"
    )


def test_rejects_a_transition_from_an_undeclared_state() -> None:
    with pytest.raises(DefinitionError) as caught:

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            go = a.on("go").to(b)
            back = State().on("back").to(a)

    assert str(caught.value) == (
        "broken v1: transition 'back' leaves a state that is not declared in this workflow "
        "(did you forget to assign it in the class body?)"
    )


def test_an_undeclared_target_names_the_alternative_at_fault() -> None:
    with pytest.raises(DefinitionError) as caught:

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            pay = a.on("paid").to(b, guard=is_positive) | a.on("paid").to(State(final=True))

    assert str(caught.value) == (
        "broken v1: alternative 2 of transition 'pay' targets a state that is not declared in "
        "this workflow (did you forget to assign it in the class body?)"
    )


def test_rejects_a_state_borrowed_from_another_workflow() -> None:
    with pytest.raises(DefinitionError) as caught:

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            go = a.on("go").to(Traffic.done)

    assert str(caught.value) == (
        "broken v1: transition 'go' targets the state 'done' of another class, not a state of "
        "this workflow; declare the state in the body of Broken"
    )


def test_rejects_an_unreachable_state() -> None:
    with pytest.raises(DefinitionError, match=r"broken v1 \(state 'island'\): unreachable"):

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            island = State(final=True)
            go = a.on("go").to(b)


def test_rejects_a_transition_out_of_a_final_state() -> None:
    with pytest.raises(DefinitionError) as caught:

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            go = a.on("go").to(b)
            back = b.on("back").to(a)

    assert str(caught.value) == (
        "broken v1 (state 'b'): transition 'back' leaves a final state; final states have no "
        "outgoing transitions"
    )


def test_rejects_two_unguarded_transitions_for_one_event() -> None:
    with pytest.raises(
        DefinitionError, match=r"broken v1 \(state 'a'\): transition 'second' for 'go' can never"
    ):

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            c = State(final=True)
            first = a.on("go").to(b)
            second = a.on("go").to(c)


def test_rejects_an_unguarded_alternative_before_a_guarded_one() -> None:
    with pytest.raises(DefinitionError) as caught:

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            c = State(final=True)
            go = a.on("go").to(b) | a.on("go").to(c, guard=lambda ctx: True)

    # The alternatives of one transition are told apart by position, not by their shared name.
    assert str(caught.value) == (
        "broken v1 (state 'a'): alternative 2 of transition 'go' for 'go' can never fire: "
        "alternative 1 before it has no guard and always wins; add a guard or reorder"
    )


def test_an_unguarded_alternative_shadowing_another_transition_is_named() -> None:
    with pytest.raises(DefinitionError) as caught:

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            c = State(final=True)
            first = a.on("go").to(b) | a.on("stop").to(c)
            second = a.on("go").to(c, guard=is_positive)

    assert str(caught.value) == (
        "broken v1 (state 'a'): transition 'second' for 'go' can never fire: the unguarded "
        "alternative 1 of transition 'first' before it always wins; add a guard or reorder"
    )


def test_rejects_composing_transitions_that_have_names_of_their_own() -> None:
    with pytest.raises(DefinitionError) as caught:

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            c = State(final=True)
            first = a.on("go").to(b, guard=is_positive)
            second = a.on("go").to(c)
            both = first | second

    assert str(caught.value) == (
        "broken v1: transition 'both' reuses transition 'first'; each transition is declared "
        "under one name: compose the alternatives in 'both' itself and drop 'first'"
    )


def test_rejects_one_alternative_listed_twice() -> None:
    with pytest.raises(DefinitionError) as caught:

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            shared = a.on("go").to(b, guard=is_positive)
            go = shared | shared
            del shared

    assert str(caught.value) == "broken v1: transition 'go' lists the same alternative twice"


def test_rejects_a_timer_on_a_final_state() -> None:
    with pytest.raises(DefinitionError) as caught:

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            go = a.on("go").to(b)
            late = b.after(timedelta(hours=1), name="late").to(a)

    assert str(caught.value) == (
        "broken v1 (state 'b'): final state 'b' cannot have a timer (timer 'late' of "
        "transition 'late'); final states are never left"
    )


def test_rejects_duplicate_timer_names_in_a_state() -> None:
    with pytest.raises(
        DefinitionError, match=r"broken v1 \(state 'a'\): duplicate timer name 'tick'"
    ):

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            first = a.after(timedelta(hours=1), name="tick").to(b)
            second = a.after(timedelta(hours=2), name="tick").to(b)


def test_rejects_a_non_positive_timer_delay() -> None:
    with pytest.raises(DefinitionError, match=r"broken v1 \(state 'a'\).*positive delay"):

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            now = a.after(timedelta(0), name="now").to(b)


def test_rejects_a_missing_name_or_data_schema() -> None:
    with pytest.raises(DefinitionError, match="set `name`"):

        class Nameless(Workflow[Data]):
            data_schema = Data
            a = State(initial=True)

    with pytest.raises(DefinitionError, match=r"broken v1: set `data_schema`"):

        class Broken(Workflow[Data]):
            name = "broken"
            a = State(initial=True)


def test_rejects_an_event_schema_that_is_not_a_model() -> None:
    with pytest.raises(DefinitionError, match=r"broken v1: events\['go'\]"):

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            events = {"go": dict}  # type: ignore[dict-item]
            a = State(initial=True)
            b = State(final=True)
            go = a.on("go").to(b)


def test_rejects_a_state_under_a_reserved_name() -> None:
    with pytest.raises(DefinitionError, match=r"broken v1 \(state 'description'\): .*reserved"):

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            description = State(initial=True)  # type: ignore[assignment]


def test_rejects_one_state_under_two_names() -> None:
    with pytest.raises(DefinitionError, match=r"broken v1 \(state 'alias'\): declared twice"):

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            alias = a


def test_on_without_sources_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="on_any"):
        on("go")


def test_rejects_a_timer_name_conveyor_keeps_for_itself() -> None:
    with pytest.raises(DefinitionError) as caught:

        class Broken(Workflow[Data]):
            name = "broken"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            late = a.after(timedelta(hours=1), name="conveyor.retry").to(b)

    assert "timer name 'conveyor.retry' is reserved" in str(caught.value)
