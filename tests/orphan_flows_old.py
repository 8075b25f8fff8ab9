"""Workflows as they were before a redeploy: ``test.orphan`` v1, and v2 with a state
(``legacy_review``) that the redeployed v2 (:mod:`tests.orphan_flows`) no longer declares.
Tests start instances with these, then load the new module to find them orphaned."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from engine.dsl import ActionContext, RetryPolicy, State, Workflow


class OrphanData(BaseModel):
    key: str


class Poke(BaseModel):
    pass


async def boom(ctx: ActionContext[OrphanData, Poke]) -> None:
    raise RuntimeError("the label service is down")


class OrphanV1(Workflow[OrphanData]):
    name = "test.orphan"
    version = 1
    data_schema = OrphanData
    events = {"orphan.poke": Poke, "orphan.fail": Poke}

    open = State(initial=True)
    done = State(final=True)

    poke = open.on("orphan.poke").to(done)
    fail = open.on("orphan.fail").to(done, action=boom, retry=RetryPolicy(attempts=1))
    idle = open.after(timedelta(hours=1), name="idle").to(done)


class OrphanV2(Workflow[OrphanData]):
    name = "test.orphan"
    version = 2
    data_schema = OrphanData
    events = {"orphan.poke": Poke, "orphan.review": Poke}

    open = State(initial=True)
    legacy_review = State()
    done = State(final=True)

    review = open.on("orphan.review").to(legacy_review)
    poke = open.on("orphan.poke").to(done)
    close = legacy_review.on("orphan.poke").to(done)
