"""A workflow for the tests of an operator's move with ``run_hooks``: leaving ``open``
records the visit and emits ``ledger.left``; entering ``review`` or ``done`` records it
and sends the command ``ledger.recount``; entering ``review`` raises for a ``broken``
ledger."""

from __future__ import annotations

from pydantic import BaseModel

from engine.dsl import ActionContext, EmptyPayload, State, Workflow


class Ledger(BaseModel):
    key: str
    visits: list[str] = []
    entered_at: str = ""
    broken: bool = False


Ctx = ActionContext[Ledger, EmptyPayload]


def leave(ctx: Ctx) -> None:
    ctx.data.visits.append(f"exit {ctx.state} to {ctx.to_state}")
    ctx.emit("ledger.left", {"key": ctx.data.key, "from": ctx.from_state})


async def arrive(ctx: Ctx) -> None:
    ctx.data.visits.append(f"enter {ctx.state} on {ctx.event_type}")
    ctx.data.entered_at = ctx.now.isoformat()
    ctx.command("ledger.recount", {"key": ctx.data.key})


def guarded(ctx: Ctx) -> None:
    if ctx.data.broken:
        raise RuntimeError("ledger service unreachable")


class Hooked(Workflow[Ledger]):
    """A ledger: open, under review, done."""

    name = "test.move_hooks"
    data_schema = Ledger

    open = State(initial=True, on_exit=[leave])
    review = State(on_enter=[arrive, guarded])
    done = State(final=True, on_enter=[arrive])

    submit = open.on("ledger.submit").to(review)
    close = review.on("ledger.close").to(done)
