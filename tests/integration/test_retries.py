"""Durable retries against the real PostgreSQL: a failing step waits as `retrying` with a
timer (nobody sleeps), events behind it are parked in order, and the scheduler resumes
it. Time is skipped with a fake clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from engine import operations
from engine.model import InstanceStatus
from engine.retries import RETRY_TIMER
from engine.runtime import Runtime
from engine.scheduler import TimerScheduler
from tests import flows
from tests.integration.test_runtime import FakeClock, ev, rows


async def retry_timers(db: AsyncEngine, instance_id: object) -> list[object]:
    found = await rows(
        db,
        "select due_at from timers where instance_id = :i and name = :n",
        i=instance_id,
        n=RETRY_TIMER,
    )
    return [r[0] for r in found]


async def test_a_failing_step_waits_as_retrying_and_events_behind_it_are_parked_in_order(
    runtime: Runtime, db: AsyncEngine, clock: FakeClock
) -> None:
    started = (await runtime.start("test.counter", "R-1", {"key": "R-1"})).instance
    flows.FAILURES["R-1"] = 2  # fails twice; the policy allows three attempts
    label = ev(started.id, "counter.slow_label", {"label": "late"})

    outcome = await runtime.send(label)  # answered at once: no sleep, no retry inline
    assert outcome.status == "retrying"
    assert outcome.error is not None
    assert "exploded" in outcome.error
    instance = await runtime.get(started.id)
    assert instance.status is InstanceStatus.RETRYING
    assert instance.error is not None
    assert instance.error["attempts"] == 1
    assert await retry_timers(db, started.id) == [clock.now + timedelta(seconds=30)]

    # Events meanwhile wait behind the retry, in order; a redelivery is parked once, and
    # the failing event delivered again changes nothing.
    ticks = [ev(started.id, "counter.close", event_id="close-1")]
    assert (await runtime.send(ticks[0])).status == "parked"
    assert (await runtime.send(ticks[0])).status == "parked"
    assert (await runtime.send(label)).status == "retrying"
    parked = await rows(
        db, "select event_id from parked_events where instance_id = :i", i=started.id
    )
    assert [r[0] for r in parked] == ["close-1"]

    scheduler = TimerScheduler(runtime)
    assert await scheduler.fire_due() == []  # not due yet
    clock.advance(timedelta(seconds=31))
    (second,) = await scheduler.fire_due()
    assert second.status == "retrying"  # attempt 2 failed: the next one after 60 s
    instance = await runtime.get(started.id)
    assert instance.status is InstanceStatus.RETRYING
    assert instance.error is not None
    assert instance.error["attempts"] == 2
    assert await retry_timers(db, started.id) == [clock.now + timedelta(seconds=60)]

    clock.advance(timedelta(seconds=61))
    (third,) = await scheduler.fire_due()
    assert (third.status, third.to_state) == ("applied", "labelled")
    done = await runtime.get(started.id)
    # The label applied, then the parked close: in order, and nothing left parked.
    assert (done.status, done.state, done.data["label"]) == (
        InstanceStatus.COMPLETED,
        "closed",
        "late",
    )
    assert await rows(db, "select 1 from parked_events") == []
    assert await retry_timers(db, started.id) == []
    history = [(h.event_type, h.outcome) for h in await runtime.history(started.id)]
    assert history[1:] == [
        ("counter.slow_label", "retrying"),
        (RETRY_TIMER, "resumed"),  # each timer-driven attempt is on the record
        ("counter.slow_label", "retrying"),
        (RETRY_TIMER, "resumed"),
        ("counter.slow_label", "applied"),
        ("counter.close", "applied"),
    ]


async def test_after_the_last_attempt_the_instance_fails_and_an_operator_retry_resumes_it(
    runtime: Runtime, db: AsyncEngine, clock: FakeClock
) -> None:
    started = (await runtime.start("test.counter", "R-2", {"key": "R-2"})).instance
    flows.FAILURES["R-2"] = 3  # every attempt the policy allows fails
    await runtime.send(ev(started.id, "counter.slow_label", {"label": "x"}))
    assert (await runtime.send(ev(started.id, "counter.tick", event_id="t-1"))).status == "parked"
    scheduler = TimerScheduler(runtime)
    clock.advance(timedelta(seconds=31))
    await scheduler.fire_due()
    clock.advance(timedelta(seconds=61))
    (last,) = await scheduler.fire_due()
    assert last.status == "failed"
    failed = await runtime.get(started.id)
    assert failed.status is InstanceStatus.FAILED
    assert failed.error is not None
    assert failed.error["attempts"] == 3
    assert await retry_timers(db, started.id) == []
    # The parked tick still waits: an operator's retry applies the label, then the tick.
    flows.FAILURES["R-2"] = 0
    retried = await operations.retry(runtime, started.id)
    assert (retried.status, retried.to_state) == ("applied", "labelled")
    recovered = await runtime.get(started.id)
    assert recovered.status is InstanceStatus.ACTIVE
    assert recovered.data["label"] == "x"
    outcomes = [h.outcome for h in await runtime.history(started.id)]
    assert outcomes[-3:] == ["retried", "applied", "rejected"]  # tick: not allowed in labelled
    assert await rows(db, "select 1 from parked_events") == []


async def test_cancelling_a_retrying_instance_refuses_what_was_parked(
    runtime: Runtime, db: AsyncEngine
) -> None:
    started = (await runtime.start("test.counter", "R-3", {"key": "R-3"})).instance
    flows.FAILURES["R-3"] = 1
    await runtime.send(ev(started.id, "counter.slow_label", {"label": "x"}))
    await runtime.send(ev(started.id, "counter.tick", event_id="t-1"))
    cancelled = await operations.cancel(runtime, started.id, reason="customer asked")
    assert cancelled.instance.status is InstanceStatus.CANCELLED
    assert await retry_timers(db, started.id) == []
    assert await rows(db, "select 1 from parked_events") == []
    history = await runtime.history(started.id)
    refused = [h for h in history if h.event_id == "t-1"]
    assert [h.outcome for h in refused] == ["rejected"]
    assert refused[0].reason is not None
    assert "cancelled" in refused[0].reason


async def test_a_kafka_style_batch_moves_on_while_one_instance_retries(
    runtime: Runtime,
) -> None:
    """send_many (the worker's path) answers at once: the failing instance's later events
    are parked, the other instances' events apply."""
    failing = (await runtime.start("test.counter", "R-4", {"key": "R-4"})).instance
    healthy = (await runtime.start("test.counter", "R-5", {"key": "R-5"})).instance
    flows.FAILURES["R-4"] = 1
    outcomes = await runtime.send_many(
        [
            ev(failing.id, "counter.slow_label", {"label": "x"}),
            ev(healthy.id, "counter.tick"),
            ev(failing.id, "counter.tick"),
            ev(healthy.id, "counter.close"),
        ]
    )
    assert [o.status for o in outcomes] == ["retrying", "applied", "parked", "applied"]
    assert (await runtime.get(healthy.id)).status is InstanceStatus.COMPLETED


async def test_a_second_failure_racing_the_first_is_parked_not_lost(
    runtime: Runtime, db: AsyncEngine
) -> None:
    """Two events fail for one instance at the same time: the first to record its failure
    makes the instance retry; the other waits behind it instead of replacing it."""
    started = (await runtime.start("test.counter", "R-6", {"key": "R-6"})).instance
    flows.FAILURES["R-6"] = 2
    first, second = await asyncio.gather(
        runtime.send(ev(started.id, "counter.slow_label", {"label": "a"}, event_id="a")),
        runtime.send(ev(started.id, "counter.slow_label", {"label": "b"}, event_id="b")),
    )
    assert sorted([first.status, second.status]) == ["parked", "retrying"]
    instance = await runtime.get(started.id)
    assert instance.error is not None
    retried = "a" if first.status == "retrying" else "b"
    assert instance.error["event_id"] == retried
    parked = await rows(
        db, "select event_id from parked_events where instance_id = :i", i=started.id
    )
    assert [r[0] for r in parked] == ["b" if retried == "a" else "a"]


async def test_a_parked_event_delivered_again_after_the_instance_failed_still_waits(
    runtime: Runtime, db: AsyncEngine, clock: FakeClock
) -> None:
    started = (await runtime.start("test.counter", "R-7", {"key": "R-7"})).instance
    flows.FAILURES["R-7"] = 3
    await runtime.send(ev(started.id, "counter.slow_label", {"label": "x"}))
    tick = ev(started.id, "counter.tick", event_id="t-7")
    assert (await runtime.send(tick)).status == "parked"
    scheduler = TimerScheduler(runtime)
    for wait in (31, 61):
        clock.advance(timedelta(seconds=wait))
        await scheduler.fire_due()
    assert (await runtime.get(started.id)).status is InstanceStatus.FAILED
    assert (await runtime.send(tick)).status == "parked"  # not refused: it still waits
    # Cancelling refuses it once, in the history, and never fails on the inbox.
    await operations.cancel(runtime, started.id)
    refused = [h for h in await runtime.history(started.id) if h.event_id == "t-7"]
    assert [h.outcome for h in refused] == ["rejected"]
