"""The DSL's operator declarations: SLAs, cancelled states and the operator's cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from engine.decide import decide
from engine.decisions import Decision, EventTrigger, Snapshot
from engine.dsl import CANCEL_EVENT, OperatorCancel, State, Workflow, on, on_cancel
from engine.errors import DefinitionError
from engine.introspect import describe, mermaid
from workflows.order import Order


class Data(BaseModel):
    note: str = ""


class Ticket(Workflow[Data]):
    name = "ticket"
    data_schema = Data

    open = State(initial=True, sla=timedelta(hours=4))
    working = State(sla=timedelta(days=1))
    resolved = State(final=True)
    withdrawn = State(cancelled=True)

    take = open.on("take").to(working)
    resolve = working.on("resolve").to(resolved)
    withdraw = on("withdraw", open, working).to(withdrawn)
    operator_cancel = on_cancel().to(withdrawn)


def test_slas_and_cancelled_states_compile_into_the_spec() -> None:
    spec = Ticket.spec
    assert spec.slas == {"open": timedelta(hours=4), "working": timedelta(days=1)}
    assert spec.states["withdrawn"].final
    assert spec.states["withdrawn"].cancelled
    assert not spec.states["resolved"].cancelled
    assert spec.payload_schemas[CANCEL_EVENT] is OperatorCancel
    # on_cancel() with no states covers every non-final one.
    assert {s for s, e in spec.routes if e == CANCEL_EVENT} == {"open", "working"}
    # What clients may send never lists the operator's cancel.
    assert CANCEL_EVENT not in spec.allowed_events["open"]


async def test_entering_a_cancelled_state_ends_the_instance_cancelled() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    withdrawn = await decide(
        Ticket, Snapshot("open", {}, 1), EventTrigger("e-1", "withdraw", {}, "api"), now
    )
    resolved = await decide(
        Ticket, Snapshot("working", {}, 2), EventTrigger("e-2", "resolve", {}, "api"), now
    )
    assert isinstance(withdrawn, Decision)
    assert isinstance(resolved, Decision)
    assert (withdrawn.final_status, resolved.final_status) == ("cancelled", "completed")
    cancel = await decide(
        Ticket,
        Snapshot("working", {}, 2),
        EventTrigger("e-3", CANCEL_EVENT, {"reason": "dup"}, "operator"),
        now,
    )
    assert isinstance(cancel, Decision)
    assert (cancel.to_state, cancel.transition, cancel.final_status) == (
        "withdrawn",
        "operator_cancel",
        "cancelled",
    )


def test_introspection_shows_slas_cancelled_states_and_operator_cancels() -> None:
    states = {s["name"]: s for s in describe(Order)["states"]}
    assert states["paid"]["sla_seconds"] == 24 * 3600
    assert states["placed"]["sla_seconds"] is None
    assert states["cancelled"]["cancelled"] is True
    assert states["paid"]["operator_cancel"] is True
    assert states["shipped"]["operator_cancel"] is False
    assert "operator cancel" in mermaid(Order)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"a": State(initial=True, sla=timedelta(0)), "b": State(final=True)}, "positive"),
        ({"a": State(initial=True), "b": State(final=True, sla=timedelta(hours=1))}, "final"),
        ({"a": State(initial=True), "b": State(final=True)}, None),
    ],
)
def test_an_sla_must_be_positive_and_not_on_a_final_state(
    body: dict[str, State], message: str | None
) -> None:
    def define() -> None:
        a, b = body["a"], body["b"]
        type(
            "W",
            (Workflow,),
            {"name": "w", "data_schema": Data, "a": a, "b": b, "go": a.on("go").to(b)},
        )

    if message is None:
        define()
    else:
        with pytest.raises(DefinitionError, match=message):
            define()


def test_an_operator_cancel_must_end_in_a_final_state() -> None:
    with pytest.raises(
        DefinitionError, match=r"operator cancel \(on_cancel\): it must move to a final state"
    ):

        class Stays(Workflow[Data]):
            name = "stays"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            go = a.on("go").to(b)
            operator_cancel = on_cancel(a).to(a)


def test_conveyor_event_types_are_reserved() -> None:
    with pytest.raises(DefinitionError, match="reserved"):

        class Sneaky(Workflow[Data]):
            name = "sneaky"
            data_schema = Data
            a = State(initial=True)
            b = State(final=True)
            go = a.on("conveyor.retry").to(b)


def test_a_payload_schema_for_an_event_nothing_handles_is_a_definition_error() -> None:
    class Paid(BaseModel):
        amount: int

    with pytest.raises(DefinitionError, match=r"'payment\.capturd'.*no transition handles"):

        class Misspelt(Workflow[Data]):
            name = "misspelt"
            data_schema = Data
            events = {"payment.capturd": Paid}
            a = State(initial=True)
            b = State(final=True)
            pay = a.on("payment.captured").to(b)
