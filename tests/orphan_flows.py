"""``test.orphan`` as redeployed: v1 is gone and v2 no longer declares ``legacy_review``
(compare :mod:`tests.orphan_flows_old`)."""

from __future__ import annotations

from pydantic import BaseModel

from engine.dsl import State, Workflow


class OrphanData(BaseModel):
    key: str


class Poke(BaseModel):
    pass


class OrphanV2(Workflow[OrphanData]):
    name = "test.orphan"
    version = 2
    data_schema = OrphanData
    events = {"orphan.poke": Poke}

    open = State(initial=True)
    done = State(final=True)

    poke = open.on("orphan.poke").to(done)
