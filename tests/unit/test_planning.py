"""The planning step of a runtime batch, driven with plain instances: no database.

What was loaded under the lock goes in; outcomes and the write set come out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from engine.model import Event, Instance, InstanceStatus, InstanceTrigger, TimerFiring
from engine.planning import Loaded, Plan, plan
from engine.registry import Registry
from engine.store.statements import APPLY, Statement
from engine.wire.topics import Topics
from tests import flows

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TOPICS = Topics("plan")


def registry() -> Registry:
    reg = Registry()
    reg.register(flows.Counter)
    return reg


def counter(
    key: str,
    *,
    status: InstanceStatus = InstanceStatus.ACTIVE,
    state: str = "open",
    error: dict[str, Any] | None = None,
) -> Instance:
    return Instance(
        id=uuid.uuid4(),
        workflow="test.counter",
        version=1,
        business_key=key,
        state=state,
        data={"key": key, "count": 0, "label": ""},
        status=status,
        revision=1,
        created_at=T0,
        updated_at=T0,
        state_entered_at=T0,
        error=error,
    )


def event(instance: Instance, type_: str, event_id: str, **payload: Any) -> Event:
    return Event(type=type_, event_id=event_id, payload=payload, instance_id=instance.id)


async def run(triggers: list[InstanceTrigger], instances: list[Instance], **loaded: Any) -> Plan:
    targets = loaded.pop("targets", [t.instance_id for t in triggers])
    return await plan(registry(), TOPICS, triggers, Loaded(targets, instances, **loaded), T0)


def written(planned: Plan) -> dict[str, list[dict[str, Any]]]:
    """The write set's rows by table, as the APPLY statement would receive them."""
    values = planned.writes.values()
    return {name: orjson.loads(value) for name, value in values.items() if name != "now"}


async def test_an_instance_s_triggers_chain_through_the_batch_into_one_update() -> None:
    a, b = counter("A"), counter("B")
    planned = await run(
        [
            event(a, "counter.tick", "a1"),
            event(b, "counter.tick", "b1", by=5),
            event(a, "counter.tick", "a2"),
        ],
        [a, b],
    )
    assert [(r.outcome.status, r.outcome.revision) for r in planned.results] == [
        ("applied", 2),
        ("applied", 2),
        ("applied", 3),
    ]
    rows = written(planned)
    updates = {row["id"]: row for row in rows["instances"]}
    assert (updates[str(a.id)]["revision"], updates[str(a.id)]["data"]["count"]) == (3, 2)
    assert updates[str(b.id)]["data"]["count"] == 5
    assert [h["event_id"] for h in rows["history"]] == ["a1", "b1", "a2"]
    assert sorted(i["event_id"] for i in rows["inbox"]) == ["a1", "a2", "b1"]


async def test_duplicates_missing_instances_and_stale_timers_write_nothing() -> None:
    a = counter("A")
    ghost = uuid.uuid4()
    stale = TimerFiring(uuid.uuid4(), a.id, "idle", "open")
    triggers: list[InstanceTrigger] = [
        event(a, "counter.tick", "seen-1"),
        Event(type="counter.tick", event_id="g1", instance_id=ghost),
        stale,
    ]
    planned = await run(triggers, [a], seen=frozenset({(a.id, "seen-1")}))
    assert [r.outcome.status for r in planned.results] == ["duplicate", "not_found", "stale"]
    assert not planned.writes
    skipped = await run(triggers[1:2], [], waited=False)
    assert skipped.results[0].outcome.status == "deferred"  # locked elsewhere: apply alone


async def test_a_failing_action_blocks_its_instance_for_the_rest_of_the_batch() -> None:
    a, b = counter("PLAN-F"), counter("PLAN-OK")
    flows.FAILURES["PLAN-F"] = 1
    planned = await run(
        [
            event(a, "counter.label", "a1", label="x"),
            event(b, "counter.tick", "b1"),
            event(a, "counter.tick", "a2"),
        ],
        [a, b],
    )
    statuses = [r.outcome.status for r in planned.results]
    assert statuses == ["failed", "applied", "deferred"]
    assert planned.results[0].failure is not None
    assert [h["event_id"] for h in written(planned)["history"]] == ["b1"]


async def test_triggers_for_a_retrying_instance_wait_behind_the_retry() -> None:
    a = counter("A", status=InstanceStatus.RETRYING, error={"event_id": "boom", "error": "x"})
    triggers: list[InstanceTrigger] = [
        event(a, "counter.tick", "t1"),
        event(a, "counter.label", "boom", label="x"),
        TimerFiring(uuid.uuid4(), a.id, "idle", "open"),
        event(a, "counter.close", "c1"),
    ]
    planned = await run(triggers, [a], live_timers=frozenset({triggers[2].event_id}))
    assert [r.outcome.status for r in planned.results] == [
        "parked",
        "retrying",
        "deferred",
        "parked",
    ]
    assert [p["event_id"] for p in planned.parked] == ["t1", "c1"]
    assert not planned.writes


async def test_a_failed_instance_refuses_new_events_but_keeps_parked_ones_waiting() -> None:
    a = counter("A", status=InstanceStatus.FAILED, error={"event_id": "boom"})
    planned = await run(
        [event(a, "counter.tick", "parked-1"), event(a, "counter.tick", "new-1")],
        [a],
        parked=frozenset({(a.id, "parked-1")}),
    )
    assert [r.outcome.status for r in planned.results] == ["parked", "rejected"]
    rejection = planned.results[1].outcome.rejection
    assert rejection is not None
    assert rejection.reason == "inactive"
    rows = written(planned)
    assert [(i["event_id"], i["outcome"]) for i in rows["inbox"]] == [("new-1", "rejected")]


async def test_a_refusal_keeps_only_a_bounded_payload() -> None:
    a = counter("A", state="labelled")
    big = "x" * 10_000
    planned = await run([event(a, "counter.tick", "t1", note=big)], [a])
    assert planned.results[0].outcome.status == "rejected"
    (history,) = written(planned)["history"]
    assert history["payload"]["_truncated"] is True
    assert history["payload"]["bytes"] > 10_000


def test_statements_take_named_parameters_in_the_order_their_sql_numbers_them() -> None:
    statement = Statement.named("select :b::int, :a, :b, x::text, 'a :c '' :d'")
    assert statement.sql == "select $1::int, $2, $1, x::text, 'a :c '' :d'"
    assert statement.args({"a": 1, "b": 2}) == [2, 1]
    with pytest.raises(KeyError):
        statement.args({"a": 1, "b": 2, "typo": 3})
    with pytest.raises(KeyError):
        statement.args({"a": 1})
    assert set(APPLY.names) == {
        "now",
        "instances",
        "history",
        "inbox",
        "outbox",
        "timer_deletes",
        "timer_sets",
    }
