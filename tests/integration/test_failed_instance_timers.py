"""A failed instance's timers wait for the operator's retry: the scheduler does not claim
them (before, it fired them into a refusal, used their id up and claimed them again after
every lease, for as long as the instance stayed failed), the overdue-timer gauge does not
count them, and once the instance is active again they fire as usual."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import operations
from engine.model import Event, InstanceStatus
from engine.runtime import Runtime
from engine.scheduler import TimerScheduler
from engine.store.gauges import overdue_timers
from tests import flows
from tests.integration.test_runtime import FakeClock


async def test_a_failed_instances_timer_waits_for_the_retry_then_fires(
    runtime: Runtime, clock: FakeClock, db: AsyncEngine
) -> None:
    flows.FAILURES.clear()
    started = await runtime.start("test.counter", "F-1", {"key": "F-1"})
    instance_id = started.instance.id
    flows.FAILURES["F-1"] = 3  # every attempt of the label's action fails
    failed = await runtime.send(label(instance_id))
    assert failed.status == "failed"
    assert (await runtime.get(instance_id)).status is InstanceStatus.FAILED

    # The idle timer (1 h in 'open') is due, twice over: nobody claims it, nothing is
    # refused or recorded, and the gauge of late timers does not count it.
    scheduler = TimerScheduler(runtime)
    for _ in range(2):
        clock.advance(timedelta(hours=1, minutes=1))
        assert await scheduler.fire_due() == []
    assert (await overdue_timers(db, clock())).timers == 0
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                text("select name, claimed_until from timers where instance_id = :i"),
                {"i": instance_id},
            )
        ).all()
        refusals = (
            await conn.execute(
                text(
                    "select count(*) from history where instance_id = :i and outcome = 'rejected'"
                ),
                {"i": instance_id},
            )
        ).scalar_one()
    assert [(r.name, r.claimed_until) for r in rows] == [("idle", None)]
    assert refusals == 0

    # The operator moves it back into service by hand (its failed step is dropped):
    # the waiting timer fires now, in the state it was set for.
    flows.FAILURES.clear()
    await operations.move(runtime, instance_id, state="open", reason="label printed by hand")
    # A move re-sets the state's timers from now: the old one went, a new one is due in 1 h.
    clock.advance(timedelta(hours=1, minutes=1))
    outcomes = await scheduler.fire_due()
    assert [o.status for o in outcomes] == ["applied"]
    after = await runtime.get(instance_id)
    assert (after.state, after.status) == ("closed", InstanceStatus.COMPLETED)


async def test_after_the_operators_retry_no_timer_is_left_behind(
    runtime: Runtime, clock: FakeClock, db: AsyncEngine
) -> None:
    flows.FAILURES.clear()
    started = await runtime.start("test.counter", "F-2", {"key": "F-2"})
    instance_id = started.instance.id
    flows.FAILURES["F-2"] = 3
    assert (await runtime.send(label(instance_id))).status == "failed"
    clock.advance(timedelta(hours=2))  # the idle timer is long due: it waits
    scheduler = TimerScheduler(runtime)
    assert await scheduler.fire_due() == []

    retried = await operations.retry(runtime, instance_id)  # the label applies now
    assert retried.status == "applied"
    after = await runtime.get(instance_id)
    assert (after.state, after.status) == ("labelled", InstanceStatus.ACTIVE)
    # Leaving 'open' dropped its idle timer: nothing is left to claim, ever.
    assert await scheduler.fire_due() == []
    async with db.connect() as conn:
        left = (
            await conn.execute(
                text("select count(*) from timers where instance_id = :i"), {"i": instance_id}
            )
        ).scalar_one()
    assert left == 0


def label(instance_id: uuid.UUID) -> Event:
    return Event("counter.label", f"label-{instance_id}", {"label": "x"}, instance_id=instance_id)
