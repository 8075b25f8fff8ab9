"""A backlog of due timers is fired by several claim-and-fire lanes at once
(``TimerScheduler.lanes``): each timer still fires exactly once, also with two schedulers
draining the same backlog, and a lane that fails stops the others after their batch and
raises its own error, leaving its claimed timers to fire once their lease has run out.
An idle scheduler wakes when its next timer comes due, not a poll interval later."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.model import Outcome, TimerFiring
from engine.runtime import Runtime
from engine.scheduler import TimerScheduler
from engine.settings import Settings
from engine.store import timers
from engine.store.database import create_engine, driver_transaction
from tests.integration.test_runtime import FakeClock, registry


async def start_counters(runtime: Runtime, prefix: str, n: int) -> list[uuid.UUID]:
    """N counters, each with its idle timer (1 h in 'open', then 'closed')."""
    return [
        (await runtime.start("test.counter", f"{prefix}{i}", {"key": f"{prefix}{i}"})).instance.id
        for i in range(n)
    ]


async def scalar(db: AsyncEngine, sql: str) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def fired_once(db: AsyncEngine, ids: Sequence[uuid.UUID]) -> None:
    """Each instance's timer fired exactly once, and no timer is left."""
    async with db.connect() as conn:
        fired = (
            await conn.execute(
                text(
                    "select instance_id, count(*) from history where source = 'timer'"
                    " group by instance_id"
                )
            )
        ).all()
        states = (await conn.execute(text("select distinct state from instances"))).all()
    assert sorted(r[0] for r in fired) == sorted(ids)
    assert {r[1] for r in fired} == {1}
    assert [r[0] for r in states] == ["closed"]
    assert await scalar(db, "select count(*) from timers") == 0


async def test_a_backlog_fires_once_through_several_lanes(
    runtime: Runtime, clock: FakeClock, db: AsyncEngine
) -> None:
    ids = await start_counters(runtime, "L", 45)
    clock.advance(timedelta(hours=2))
    scheduler = TimerScheduler(runtime, batch_size=4, lanes=3, poll_interval=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(scheduler.run(stop))
    deadline = time.monotonic() + 30
    try:
        while await scalar(db, "select count(*) from timers"):
            assert time.monotonic() < deadline, "the backlog was not fired within 30 s"
            assert not running.done()
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    assert scheduler.fired == 45
    await fired_once(db, ids)


async def test_two_schedulers_with_lanes_fire_each_timer_once(
    settings: Settings, clock: FakeClock, db: AsyncEngine
) -> None:
    engines = [create_engine(settings) for _ in range(2)]
    runtimes = [Runtime(e, registry(), clock=clock) for e in engines]
    try:
        ids = await start_counters(runtimes[0], "D", 60)
        clock.advance(timedelta(hours=2))
        schedulers = [TimerScheduler(rt, batch_size=5, lanes=3) for rt in runtimes]
        await asyncio.gather(*(s.drain(asyncio.Event()) for s in schedulers))
    finally:
        for pool in engines:
            await pool.dispose()
    assert sum(s.fired for s in schedulers) == 60
    await fired_once(db, ids)


class Refusing(Runtime):
    """Fails the second batch it is asked to fire (before touching it), as a lane meets
    an error it cannot handle."""

    calls = 0

    async def fire_timers(self, firings: Sequence[TimerFiring]) -> list[Outcome]:
        self.calls += 1
        if self.calls == 2:
            raise LookupError("this batch cannot be fired")
        return await super().fire_timers(firings)


async def test_a_failing_lane_raises_its_error_and_its_timers_wait_for_the_lease(
    settings: Settings, clock: FakeClock, db: AsyncEngine
) -> None:
    refusing = Refusing(db, registry(), topic_prefix=settings.topic_prefix, clock=clock)
    ids = await start_counters(refusing, "F", 12)
    clock.advance(timedelta(hours=2))
    lease = timedelta(minutes=1)
    scheduler = TimerScheduler(refusing, batch_size=3, lanes=2, lease=lease)
    with pytest.raises(LookupError, match="cannot be fired"):  # the error, not a group
        await scheduler.drain(asyncio.Event())
    leased = await scalar(db, "select count(*) from timers where claimed_until is not null")
    assert leased >= 3  # at least the refused batch keeps its lease

    # Before the lease runs out, only the timers nobody claimed fire.
    await scheduler.drain(asyncio.Event())
    assert await scalar(db, "select count(*) from timers") == leased

    # Once the lease has run out, whatever is left fires, each timer once.
    clock.advance(lease + timedelta(seconds=1))
    await scheduler.drain(asyncio.Event())
    await fired_once(db, ids)


async def test_an_idle_scheduler_wakes_when_its_next_timer_comes_due(
    settings: Settings, db: AsyncEngine
) -> None:
    real = Runtime(db, registry(), topic_prefix=settings.topic_prefix)  # the wall clock
    (instance_id,) = await start_counters(real, "W", 1)
    due = datetime.now(UTC) + timedelta(seconds=0.5)
    async with driver_transaction(db) as conn:
        await timers.set_timer(conn, instance_id, "idle", "open", due)
    # Polling every 30 s, it would find the timer up to 30 s late.
    scheduler = TimerScheduler(real, poll_interval=30.0)
    stop = asyncio.Event()
    running = asyncio.create_task(scheduler.run(stop))
    try:
        while not scheduler.fired:
            assert datetime.now(UTC) < due + timedelta(seconds=5), "not fired 5 s after due"
            assert not running.done()
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await running
    await fired_once(db, [instance_id])
