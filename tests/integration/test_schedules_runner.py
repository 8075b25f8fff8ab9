"""Schedules fired by the runner against the real PostgreSQL, on an injected clock: a cron
start at its time, an interval, daylight saving time in Europe/Berlin, two runners and
one tick, downtime with each missed-tick policy, pause, resume, trigger, a publishing
schedule's outbox CloudEvent, and a business key that does not vary (conflict)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import schedule_runner as schedules
from engine.errors import InvalidRequest
from engine.messaging.metrics import WorkerCollector, WorkerMetrics
from engine.messaging.relay import OutboxRelay
from engine.registry import Registry, UnknownSchedule
from engine.runtime import Runtime
from engine.schedule_runner import ScheduleRunner, TickRecord, tick_id
from engine.schedules import Schedule
from engine.settings import Settings
from engine.store import schedules as schedule_store
from engine.store.database import driver_connection
from engine.worker import run_worker
from tests import flows
from tests.conftest import wait_for
from tests.integration.test_runtime import FakeClock
from tests.integration.test_worker import consume

BERLIN = ZoneInfo("Europe/Berlin")


def counter_data(tick: datetime) -> Mapping[str, Any]:
    return {"key": f"k-{tick:%Y%m%d%H%M}", "label": tick.isoformat()}


class Nightly(Schedule):
    """The nightly reconciliation, at 02:30 Berlin time."""

    name = "nightly"
    cron = "30 2 * * *"
    timezone = "Europe/Berlin"
    starts = flows.Counter
    business_key = "reconcile-{local:%Y-%m-%d}"

    @staticmethod
    def data(tick: datetime) -> Mapping[str, Any]:
        return counter_data(tick)


class Quarterly(Schedule):
    name = "quarter-hour"
    every = timedelta(minutes=15)
    starts = "test.counter"
    data = {"key": "from-a-dict"}


class WaveRelease(Schedule):
    name = "wave-release"
    every = timedelta(minutes=15)
    publishes = "warehouse.wave_release_due"
    business_key = "wave-{tick:%H%M}"
    data = {"warehouse": "WH-1"}


class Fixed(Schedule):
    name = "fixed"
    every = timedelta(minutes=10)
    starts = flows.Counter
    business_key = "always-the-same"
    data = {"key": "from-a-dict"}


def every_ten(policy: str, catch_up: int = 100) -> type[Schedule]:
    body = {
        "name": f"ten-{policy}",
        "cron": "*/10 * * * *",
        "starts": flows.Counter,
        "missed": policy,
        "max_catch_up": catch_up,
        "data": staticmethod(counter_data),
    }
    return type(f"Ten{policy.title()}", (Schedule,), body)


def registry(*declared: type[Schedule]) -> Registry:
    reg = Registry()
    reg.register(flows.Counter)
    for schedule in declared:
        reg.register_schedule(schedule)
    reg.check_schedules()
    return reg


def runtime_of(db: AsyncEngine, settings: Settings, reg: Registry, clock: FakeClock) -> Runtime:
    return Runtime(db, reg, topic_prefix=settings.topic_prefix, clock=clock)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def row(db: AsyncEngine, name: str) -> Mapping[str, Any]:
    async with driver_connection(db) as conn:
        found = await conn.fetchrow("select * from schedules where name = $1", name)
    assert found is not None
    return dict(found)


async def all_ticks(db: AsyncEngine, name: str) -> list[TickRecord]:
    records, _ = await schedules.ticks(db, name, limit=500)
    return list(reversed(records))


async def drain(runner: ScheduleRunner) -> list[TickRecord]:
    """Rounds until nothing is due."""
    records: list[TickRecord] = []
    while batch := await runner.fire_due():
        records.extend(batch)
    return records


async def test_a_cron_schedule_starts_its_workflow_at_its_time(
    db: AsyncEngine, settings: Settings
) -> None:
    clock = FakeClock(at("2026-12-02T23:00:00+00:00"))
    runtime = runtime_of(db, settings, registry(Nightly), clock)
    await schedules.sync_schedules(db, runtime.registry, clock())
    metrics = WorkerMetrics()
    runner = ScheduleRunner(runtime, metrics=metrics)
    assert (await row(db, "nightly"))["next_tick"] == at("2026-12-03T02:30:00+01:00")

    clock.now = at("2026-12-03T02:29:59+01:00")
    assert await runner.fire_due() == []

    clock.now = at("2026-12-03T02:30:02+01:00")
    (record,) = await runner.fire_due()
    the_tick = at("2026-12-03T01:30:00+00:00")
    assert record.tick_id == "nightly@2026-12-03T01:30:00Z" == tick_id("nightly", the_tick)
    assert (record.outcome, record.business_key, record.manual) == (
        "started",
        "reconcile-2026-12-03",
        False,
    )
    assert record.lateness_seconds == 2.0
    assert await runner.fire_due() == []  # fired once
    instance = await runtime.get(record.instance_id)  # type: ignore[arg-type]
    assert instance.business_key == "reconcile-2026-12-03"
    assert instance.data["key"] == "k-202612030130"
    async with driver_connection(db) as conn:
        history = await conn.fetch(
            "select source, event_id from history where instance_id = $1", instance.id
        )
    assert [(h["source"], h["event_id"]) for h in history] == [("schedule", record.tick_id)]
    state = await schedules.get_schedule(db, runtime.registry, "nightly", now=clock())
    assert state.last_tick == the_tick
    assert state.last_outcome == "started"
    assert state.next_tick == at("2026-12-04T02:30:00+01:00")
    assert state.stored
    assert metrics.schedule_ticks[("nightly", "started")] == 1
    families = {f.name: f for f in WorkerCollector(metrics).collect()}
    assert families["conveyor_schedule_ticks"].samples[0].labels == {
        "schedule": "nightly",
        "outcome": "started",
    }
    assert "conveyor_schedule_tick_lateness_seconds" in families


async def test_an_interval_schedule_fires_at_multiples_of_its_interval(
    db: AsyncEngine, settings: Settings
) -> None:
    clock = FakeClock(at("2026-12-03T10:07:00+00:00"))
    runtime = runtime_of(db, settings, registry(Quarterly), clock)
    await schedules.sync_schedules(db, runtime.registry, clock())
    runner = ScheduleRunner(runtime)
    fired: list[TickRecord] = []
    for minute in range(8, 50):
        clock.now = at(f"2026-12-03T10:{minute:02d}:00+00:00") + timedelta(seconds=1)
        fired.extend(await runner.fire_due())
    assert [r.tick for r in fired] == [
        at("2026-12-03T10:15:00+00:00"),
        at("2026-12-03T10:30:00+00:00"),
        at("2026-12-03T10:45:00+00:00"),
    ]
    assert [r.business_key for r in fired] == [
        "quarter-hour-2026-12-03T10:15:00Z",
        "quarter-hour-2026-12-03T10:30:00Z",
        "quarter-hour-2026-12-03T10:45:00Z",
    ]
    assert {r.outcome for r in fired} == {"started"}


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # Spring forward (29 March 2026, 02:00 -> 03:00): 02:30 does not exist that day and
        # fires once at 03:30 summer time (01:30 UTC, like the day before).
        (
            "2026-03-27T12:00:00+00:00",
            ["2026-03-28T02:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"],
        ),
        # Fall back (25 October 2026, 03:00 -> 02:00): 02:30 comes twice and fires once, at
        # its first occurrence (summer time).
        (
            "2026-10-23T12:00:00+00:00",
            ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
        ),
    ],
)
async def test_daylight_saving_time_in_berlin_fires_once_a_day(
    db: AsyncEngine, settings: Settings, start: str, expected: list[str]
) -> None:
    clock = FakeClock(at(start))
    runtime = runtime_of(db, settings, registry(Nightly), clock)
    await schedules.sync_schedules(db, runtime.registry, clock())
    runner = ScheduleRunner(runtime)
    fired: list[TickRecord] = []
    for _ in expected:
        due_at = (await row(db, "nightly"))["next_tick"]
        for offset in (timedelta(seconds=-1), timedelta(seconds=1), timedelta(minutes=61)):
            clock.now = due_at + offset  # just before, at, and after an hour (the repeat)
            fired.extend(await runner.fire_due())
    assert [r.tick for r in fired] == [at(t) for t in expected]
    assert [r.tick.astimezone(BERLIN).isoformat() for r in fired] == expected
    assert [r.business_key for r in fired] == [f"reconcile-{t[:10]}" for t in expected]
    assert {r.outcome for r in fired} == {"started"}


async def test_two_runners_fire_each_tick_once(db: AsyncEngine, settings: Settings) -> None:
    body = {"cron": "0 * * * *", "starts": flows.Counter, "data": staticmethod(counter_data)}
    many = [type(f"Many{i}", (Schedule,), {"name": f"many-{i:02d}", **body}) for i in range(60)]
    clock = FakeClock(at("2026-12-03T10:30:00+00:00"))
    reg = registry(*many)
    await schedules.sync_schedules(db, reg, clock())
    clock.now = at("2026-12-03T11:00:05+00:00")
    runners = [ScheduleRunner(runtime_of(db, settings, reg, clock), batch_size=7) for _ in range(2)]
    first, second = await asyncio.gather(*(drain(r) for r in runners))
    fired = first + second
    assert len(fired) == 60
    assert {r.outcome for r in fired} == {"started"}
    assert len({r.tick_id for r in fired}) == 60
    assert first
    assert second
    async with driver_connection(db) as conn:
        assert await conn.fetchval("select count(*) from instances") == 60
        # The last guard: a row moved back to a recorded tick does not fire it again.
        await conn.execute(
            "update schedules set next_tick = $1 where name = 'many-00'",
            at("2026-12-03T11:00:00+00:00"),
        )
    assert await runners[0].fire_due() == []
    assert (await row(db, "many-00"))["next_tick"] == at("2026-12-03T12:00:00+00:00")
    async with driver_connection(db) as conn:
        assert await conn.fetchval("select count(*) from instances") == 60
        assert await conn.fetchval("select count(*) from schedule_ticks") == 60


async def test_a_tick_redone_after_a_crash_before_commit_fires_once(
    db: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(at("2026-12-03T10:07:00+00:00"))
    reg = registry(Quarterly)
    await schedules.sync_schedules(db, reg, clock())
    clock.now = at("2026-12-03T10:15:01+00:00")
    runtime = runtime_of(db, settings, reg, clock)
    crashed = ScheduleRunner(runtime)

    async def crash(*_: Any) -> None:
        raise ConnectionResetError("the runner died before committing")

    with monkeypatch.context() as patch:
        patch.setattr(schedule_store, "advance", crash)
        with pytest.raises(ConnectionResetError):
            await crashed.fire_due()
    async with driver_connection(db) as conn:
        assert await conn.fetchval("select count(*) from instances") == 0  # rolled back
    (record,) = await ScheduleRunner(runtime).fire_due()
    assert record.outcome == "started"
    async with driver_connection(db) as conn:
        assert await conn.fetchval("select count(*) from instances") == 1


@pytest.mark.parametrize(
    ("policy", "catch_up", "fired", "skipped"),
    [
        ("latest", 100, ["10:50"], ["10:20", "10:30", "10:40"]),
        ("all", 3, ["10:30", "10:40", "10:50"], []),  # max_catch_up 3: 10:20 is dropped
        ("skip", 100, [], ["10:20", "10:30", "10:40", "10:50"]),
    ],
)
async def test_downtime_across_a_restart_follows_the_missed_tick_policy(
    db: AsyncEngine,
    settings: Settings,
    policy: str,
    catch_up: int,
    fired: list[str],
    skipped: list[str],
) -> None:
    schedule = every_ten(policy, catch_up)
    reg = registry(schedule)
    clock = FakeClock(at("2026-12-03T10:05:00+00:00"))
    await schedules.sync_schedules(db, reg, clock())
    clock.now = at("2026-12-03T10:10:01+00:00")
    before = await ScheduleRunner(runtime_of(db, settings, reg, clock)).fire_due()
    assert [r.tick for r in before] == [at("2026-12-03T10:10:00+00:00")]
    # The worker is down from 10:11 to 10:55: a new one starts.
    clock.now = at("2026-12-03T10:55:00+00:00")
    restarted = runtime_of(db, settings, registry(schedule), clock)
    await schedules.sync_schedules(db, restarted.registry, clock())  # unchanged: kept
    after = await ScheduleRunner(restarted).fire_due()
    name = f"ten-{policy}"

    def times(records: list[TickRecord], outcome: str) -> list[str]:
        return [f"{r.tick:%H:%M}" for r in records if r.outcome == outcome]

    assert times(after, "started") == fired
    assert times(after, "skipped") == skipped
    assert times(await all_ticks(db, name), "skipped") == skipped
    assert {r.lateness_seconds for r in after if r.tick == at("2026-12-03T10:50:00+00:00")} == {
        300.0
    }
    assert (await row(db, name))["next_tick"] == at("2026-12-03T11:00:00+00:00")
    assert (await row(db, name))["last_tick"] == (
        at(f"2026-12-03T{fired[-1]}:00+00:00") if fired else at("2026-12-03T10:10:00+00:00")
    )
    clock.now = at("2026-12-03T11:00:01+00:00")
    assert [r.tick_id for r in await ScheduleRunner(restarted).fire_due()] == [
        f"{name}@2026-12-03T11:00:00Z"
    ]


async def test_pause_resume_and_trigger(db: AsyncEngine, settings: Settings) -> None:
    clock = FakeClock(at("2026-12-03T10:05:00+00:00"))
    reg = registry(every_ten("latest"), Quarterly)
    runtime = runtime_of(db, settings, reg, clock)
    listed = await schedules.list_schedules(db, reg, now=clock())  # before any sync
    assert [(s.spec.name, s.stored, s.paused) for s in listed] == [
        ("quarter-hour", False, False),
        ("ten-latest", False, False),
    ]
    assert listed[1].next_tick == at("2026-12-03T10:10:00+00:00")
    await schedules.sync_schedules(db, reg, clock())
    runner = ScheduleRunner(runtime)

    paused = await schedules.pause(db, reg, "ten-latest", clock())
    assert paused.paused
    assert paused.updated_at == clock()
    clock.now = at("2026-12-03T10:07:00+00:00")
    assert (await schedules.pause(db, reg, "ten-latest", clock())).updated_at == at(
        "2026-12-03T10:05:00+00:00"
    )  # idempotent
    clock.now = at("2026-12-03T10:41:00+00:00")
    assert {r.schedule for r in await drain(runner)} == {"quarter-hour"}  # not the paused one

    manual = await schedules.trigger(runtime, reg, "ten-latest", clock(), request_id="req-1")
    assert manual.manual
    assert manual.outcome == "started"
    assert manual.lateness_seconds == 0
    assert manual.tick_id.startswith("ten-latest@manual:")
    assert manual.request_id == "req-1"
    assert manual.business_key == "ten-latest-2026-12-03T10:41:00Z"
    state = await schedules.get_schedule(db, reg, "ten-latest", now=clock())
    assert state.paused
    assert state.next_tick == at("2026-12-03T10:10:00+00:00")
    assert (state.last_outcome, state.last_fired_at, state.last_tick) == ("started", clock(), None)
    again = await schedules.trigger(runtime, reg, "ten-latest", clock())
    assert again.tick_id != manual.tick_id
    assert again.outcome == "conflict"

    resumed = await schedules.resume(db, reg, "ten-latest", clock())
    assert not resumed.paused
    assert resumed.next_tick == at("2026-12-03T10:50:00+00:00")
    assert await runner.fire_due() == []  # 10:10 to 10:40 were missed while paused: not fired
    clock.now = at("2026-12-03T10:50:01+00:00")
    assert [r.tick_id for r in await drain(runner) if r.schedule == "ten-latest"] == [
        "ten-latest@2026-12-03T10:50:00Z"
    ]
    resumed_again = await schedules.resume(db, reg, "ten-latest", clock())
    assert resumed_again.next_tick == at("2026-12-03T11:00:00+00:00")  # running: unchanged

    page, cursor = await schedules.ticks(db, "ten-latest", limit=2)
    assert [r.outcome for r in page] == ["started", "conflict"]
    assert cursor is not None
    rest, end = await schedules.ticks(db, "ten-latest", limit=2, before=cursor)
    assert [r.tick_id for r in rest] == [manual.tick_id]
    assert end is None
    with pytest.raises(InvalidRequest):
        await schedules.ticks(db, "ten-latest", before="abc")
    with pytest.raises(UnknownSchedule):
        await schedules.pause(db, reg, "nope", clock())
    with pytest.raises(UnknownSchedule):
        await schedules.trigger(runtime, reg, "nope", clock())


async def test_a_publishing_schedule_writes_one_cloudevent_per_tick(
    db: AsyncEngine, settings: Settings
) -> None:
    clock = FakeClock(at("2026-12-03T10:07:00+00:00"))
    reg = registry(WaveRelease)
    runtime = runtime_of(db, settings, reg, clock)
    await schedules.sync_schedules(db, reg, clock())
    runner = ScheduleRunner(runtime)
    records: list[TickRecord] = []
    for stamp in ("10:15:01", "10:15:30", "10:30:02"):
        clock.now = at(f"2026-12-03T{stamp}+00:00")
        records.extend(await runner.fire_due())
    assert [(r.outcome, r.business_key) for r in records] == [
        ("published", "wave-1015"),
        ("published", "wave-1030"),
    ]
    async with driver_connection(db) as conn:
        rows = await conn.fetch(
            "select message_id, instance_id, topic, key, headers, value from outbox order by id"
        )
    assert len(rows) == 2
    first = rows[0]
    event = json.loads(first["value"])
    expected_id = schedules.event_id("wave-release@2026-12-03T10:15:00Z")
    assert str(first["message_id"]) == expected_id == event["id"]
    assert records[0].message_id == uuid.UUID(expected_id)
    assert first["instance_id"] is None
    assert first["topic"] == f"{settings.topic_prefix}.in"
    assert first["key"] == b"wave-1015"
    assert event["source"] == "conveyor/schedule/wave-release"
    assert event["type"] == "warehouse.wave_release_due"
    assert event["subject"] == "wave-1015"
    assert event["data"] == {"warehouse": "WH-1"}
    assert event["conveyortick"] == "wave-release@2026-12-03T10:15:00Z"


async def test_a_key_that_does_not_vary_is_a_conflict_on_the_next_tick(
    db: AsyncEngine, settings: Settings
) -> None:
    clock = FakeClock(at("2026-12-03T10:05:00+00:00"))
    reg = registry(Fixed)
    runtime = runtime_of(db, settings, reg, clock)
    await schedules.sync_schedules(db, reg, clock())
    runner = ScheduleRunner(runtime)
    records: list[TickRecord] = []
    for stamp in ("10:10:01", "10:20:01"):
        clock.now = at(f"2026-12-03T{stamp}+00:00")
        records.extend(await runner.fire_due())
    assert [r.outcome for r in records] == ["started", "conflict"]
    assert records[1].instance_id is None
    assert records[1].detail
    assert (await row(db, "fixed"))["next_tick"] == at("2026-12-03T10:30:00+00:00")


async def test_undeclared_changed_and_foreign_schedules(
    db: AsyncEngine, settings: Settings
) -> None:
    clock = FakeClock(at("2026-12-03T10:07:00+00:00"))
    reg = registry(Quarterly, WaveRelease)
    await schedules.sync_schedules(db, reg, clock())
    async with driver_connection(db) as conn:
        await conn.execute(
            "insert into schedules (name, fingerprint, next_tick) values ('gone', 'x', $1)",
            clock(),
        )
    # A process without the workflow fires only the publishing schedule.
    foreign = Registry()
    foreign.register_schedule(WaveRelease)
    foreign.register_schedule(type("Q", (Schedule,), {**_body(Quarterly), "starts": "elsewhere"}))
    clock.now = at("2026-12-03T10:15:01+00:00")
    fired = await ScheduleRunner(runtime_of(db, settings, foreign, clock)).fire_due()
    assert [r.schedule for r in fired] == ["wave-release"]
    assert (await row(db, "gone"))["next_tick"] == at("2026-12-03T10:07:00+00:00")
    # A changed definition: the row gets the new fingerprint and next tick on sync.
    changed = Registry()
    changed.register(flows.Counter)
    changed.register_schedule(
        type("Q2", (Schedule,), {**_body(Quarterly), "every": timedelta(minutes=20)})
    )
    await schedules.sync_schedules(db, changed, clock())
    assert (await row(db, "quarter-hour"))["next_tick"] == at("2026-12-03T10:20:00+00:00")
    assert await ScheduleRunner(runtime_of(db, settings, reg, clock)).fire_due() == []


def _body(schedule: type[Schedule]) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(schedule).items()
        if key in {"name", "cron", "every", "starts", "publishes", "business_key", "data"}
    }


async def test_the_relay_publishes_a_schedule_event_to_kafka(
    db: AsyncEngine, settings: Settings, kafka_admin: AIOKafkaAdminClient
) -> None:
    topic = f"{settings.topic_prefix}.in"
    await kafka_admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    try:
        clock = FakeClock(at("2026-12-03T10:07:00+00:00"))
        reg = registry(WaveRelease)
        await schedules.sync_schedules(db, reg, clock())
        clock.now = at("2026-12-03T10:15:01+00:00")
        (record,) = await ScheduleRunner(runtime_of(db, settings, reg, clock)).fire_due()
        stop = asyncio.Event()
        relay = asyncio.create_task(OutboxRelay(db, settings, poll_interval=0.2).run(stop))
        try:
            (message,) = await consume(settings, topic, 1)
        finally:
            stop.set()
            async with asyncio.timeout(10):
                await relay
        event = json.loads(message.value)
        assert message.key == b"wave-1015"
        assert event["id"] == str(record.message_id)
        assert (event["type"], event["subject"]) == ("warehouse.wave_release_due", "wave-1015")
    finally:
        await kafka_admin.delete_topics([topic])


async def test_a_worker_s_scheduler_service_syncs_and_fires_schedules(
    db: AsyncEngine, settings: Settings
) -> None:
    metrics = WorkerMetrics()
    stop = asyncio.Event()
    worker = settings.model_copy(
        update={"worker_services": ["scheduler"], "workflow_modules": ["tests.schedule_flows"]}
    )
    task = asyncio.create_task(
        run_worker(worker, stop=stop, install_signals=False, metrics=metrics)
    )
    try:
        await wait_for(lambda: _ticks_recorded(db, 2), timeout=20)
    finally:
        stop.set()
        async with asyncio.timeout(25):
            assert await task == 0
    recorded = await all_ticks(db, "heartbeat")
    assert len({r.tick_id for r in recorded}) == len(recorded) >= 2
    assert {r.outcome for r in recorded} <= {"published", "skipped"}
    assert sum(n for (name, _), n in metrics.schedule_ticks.items() if name == "heartbeat") == len(
        recorded
    )


async def _ticks_recorded(db: AsyncEngine, at_least: int) -> bool:
    async with driver_connection(db) as conn:
        count: int = await conn.fetchval("select count(*) from schedule_ticks")
    return count >= at_least
