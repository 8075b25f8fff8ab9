"""Small workflows that exist only for tests of the runtime (not loaded by default)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from engine.dsl import ActionContext, RetryPolicy, State, Workflow

FAILURES: dict[str, int] = {}
"""Remaining failures per instance key: ``explode`` raises while its count is above 0."""


class CounterData(BaseModel):
    key: str
    count: int = 0
    label: str = ""


class Tick(BaseModel):
    by: int = 1


class Label(BaseModel):
    label: str


async def add(ctx: ActionContext[CounterData, Tick]) -> None:
    ctx.data.count += ctx.payload.by
    ctx.emit("counter.ticked", {"key": ctx.data.key, "count": ctx.data.count})


async def explode(ctx: ActionContext[CounterData, Label]) -> None:
    remaining = FAILURES.get(ctx.data.key, 0)
    if remaining > 0:
        FAILURES[ctx.data.key] = remaining - 1
        raise RuntimeError(f"label service exploded for {ctx.data.key}")
    ctx.data.label = ctx.payload.label


class Counter(Workflow[CounterData]):
    """Counts ticks; a label can fail; closes after an idle hour."""

    name = "test.counter"
    version = 1
    data_schema = CounterData
    events = {"counter.tick": Tick, "counter.label": Label, "counter.slow_label": Label}

    open = State("Counting", initial=True)
    labelled = State("Labelled")
    closed = State(final=True)

    tick = open.on("counter.tick").internal(action=add)
    label = open.on("counter.label").to(
        labelled,
        action=explode,
        retry=RetryPolicy(attempts=3, initial_backoff=timedelta(0), max_backoff=timedelta(0)),
    )
    # The same failing action with a real backoff: retried durably, by a timer.
    slow_label = open.on("counter.slow_label").to(
        labelled,
        action=explode,
        retry=RetryPolicy(
            attempts=3, initial_backoff=timedelta(seconds=30), max_backoff=timedelta(minutes=5)
        ),
    )
    close = open.on("counter.close").to(closed)
    idle = open.after(timedelta(hours=1), name="idle").to(closed)
    relabel = labelled.on("counter.close").to(closed)


class CounterV2(Workflow[CounterData]):
    """Version 2: a tick moves to 'counted' (different shape)."""

    name = "test.counter"
    version = 2
    data_schema = CounterData
    events = {"counter.tick": Tick}

    open = State("Counting", initial=True)
    counted = State(final=True)

    tick = open.on("counter.tick").to(counted, action=add)
