"""History retention: ended instances lose their history after it, in bounded batches;
recent, active and failed instances keep theirs, and every instance row stays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import operations
from engine.errors import InstanceConflict
from engine.model import Event, InstanceStatus
from engine.registry import Registry
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.database import driver_connection
from engine.store.retention import (
    _WALK_START,
    HISTORY_PAGE,
    PRUNE_HISTORY,
    prune,
    prune_history,
)
from tests import flows

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
RETENTION = timedelta(days=30)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def runtime(db: AsyncEngine, settings: Settings, clock: Clock) -> Runtime:
    registry = Registry()
    registry.register(flows.Counter)
    return Runtime(db, registry, topic_prefix=settings.topic_prefix, clock=clock)


async def history_count(db: AsyncEngine, instance_id: uuid.UUID) -> int:
    async with db.connect() as conn:
        result = await conn.execute(
            text("select count(*) from history where instance_id = :i"), {"i": instance_id}
        )
        return int(result.scalar_one())


async def instance_count(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(text("select count(*) from instances"))).scalar_one())


async def ticked(runtime: Runtime, key: str, ticks: int) -> uuid.UUID:
    """A counter instance with a start row and ``ticks`` applied ticks in its history."""
    instance = (await runtime.start("test.counter", key, {"key": key})).instance
    for i in range(ticks):
        outcome = await runtime.send(
            Event("counter.tick", f"{key}-tick-{i}", {}, instance_id=instance.id)
        )
        assert outcome.status == "applied"
    return instance.id


async def closed(runtime: Runtime, key: str, ticks: int) -> uuid.UUID:
    instance_id = await ticked(runtime, key, ticks)
    outcome = await runtime.send(
        Event("counter.close", f"{key}-close", {}, instance_id=instance_id)
    )
    assert outcome.status == "applied"
    return instance_id


async def mark_failed(db: AsyncEngine, instance_id: uuid.UUID) -> None:
    """Fail the instance as the runtime does after an action's last attempt (however a
    failure comes about, a failed instance keeps its history for the operator)."""
    async with db.begin() as conn:
        await conn.execute(
            text("update instances set status = 'failed', error = cast(:e as jsonb) where id = :i"),
            {"i": instance_id, "e": '{"message": "label service exploded"}'},
        )


async def test_only_instances_that_ended_longer_ago_than_the_retention_lose_their_history(
    runtime: Runtime, db: AsyncEngine, clock: Clock
) -> None:
    # Long ago (T0): one completed, one cancelled, one failed, one still active.
    old_completed = await closed(runtime, "old-done", ticks=4)
    old_cancelled = await ticked(runtime, "old-cancelled", ticks=2)
    await operations.cancel(runtime, old_cancelled, reason="customer changed their mind")
    old_failed = await ticked(runtime, "old-failed", ticks=1)
    await mark_failed(db, old_failed)
    old_active = await ticked(runtime, "old-active", ticks=3)
    # A late event refused by the completed instance adds to its history: it goes too.
    late = await runtime.send(Event("counter.tick", "late", {}, instance_id=old_completed))
    assert late.status == "rejected"
    # Recently (a day before the run): one completed.
    clock.now = T0 + RETENTION + timedelta(days=9)
    recent_completed = await closed(runtime, "recent-done", ticks=2)
    statuses = {
        old_completed: InstanceStatus.COMPLETED,
        old_cancelled: InstanceStatus.CANCELLED,
        old_failed: InstanceStatus.FAILED,
        old_active: InstanceStatus.ACTIVE,
        recent_completed: InstanceStatus.COMPLETED,
    }
    for instance_id, status in statuses.items():
        assert (await runtime.get(instance_id)).status is status
    before = {i: await history_count(db, i) for i in statuses}
    assert before[old_completed] == 1 + 4 + 1 + 1  # start, ticks, close, the late refusal
    assert before[old_cancelled] == 1 + 2 + 1

    now = T0 + RETENTION + timedelta(days=10)
    # Batches of 2 rows over pages of 1 instance: every page takes several statements.
    pruned = await prune(
        db,
        now=now,
        inbox_retention=timedelta(days=3650),
        outbox_retention=timedelta(days=3650),
        history_retention=RETENTION,
        batch=2,
        history_page=1,
    )
    assert pruned.history == before[old_completed] + before[old_cancelled]
    after = {i: await history_count(db, i) for i in statuses}
    assert after == {**before, old_completed: 0, old_cancelled: 0}
    assert await instance_count(db) == len(statuses)  # the instance rows stay
    done = await runtime.get(old_completed)
    assert (done.status, done.state, done.data["count"]) == (InstanceStatus.COMPLETED, "closed", 4)
    # Its business key is still taken.
    with pytest.raises(InstanceConflict, match=str(old_completed)):
        await runtime.start("test.counter", "old-done", {"key": "old-done"})

    # A second run finds nothing more to delete.
    assert await prune_history(db, cutoff=now - RETENTION, batch=2, page=1) == 0


async def test_without_a_history_retention_nothing_of_the_history_goes(
    runtime: Runtime, db: AsyncEngine, clock: Clock
) -> None:
    done = await closed(runtime, "kept", ticks=1)
    pruned = await prune(
        db,
        now=T0 + timedelta(days=10_000),
        inbox_retention=timedelta(days=1),
        outbox_retention=timedelta(hours=1),
    )
    assert pruned.history == 0
    assert await history_count(db, done) == 3


async def test_the_walk_pages_through_many_ended_instances(
    runtime: Runtime, db: AsyncEngine, clock: Clock
) -> None:
    ended = [await closed(runtime, f"many-{i}", ticks=i % 3) for i in range(7)]
    expected = sum([await history_count(db, i) for i in ended])
    deleted = await prune_history(db, cutoff=T0 + timedelta(seconds=1), batch=3, page=2)
    assert deleted == expected
    assert [await history_count(db, i) for i in ended] == [0] * 7


async def test_the_walk_reads_by_index_only_never_a_whole_table(db: AsyncEngine) -> None:
    """The page comes from the partial index of ended instances, its history rows from
    history's indexes (by instance, then by primary key): no sequential scan."""
    async with db.begin() as conn:
        await conn.execute(
            text(
                "insert into instances (id, workflow, version, business_key, state, data,"
                " status, state_entered_at, updated_at)"
                " select gen_random_uuid(), 'w', 1, 'k' || g, 's', '{}',"
                " case when g % 10 = 0 then 'completed' else 'active' end,"
                " cast(:t as timestamptz),"
                " cast(:t as timestamptz) - make_interval(mins => g)"
                " from generate_series(1, 20000) g"
            ),
            {"t": T0},
        )
        await conn.execute(
            text(
                "insert into history (instance_id, revision, event_id, event_type, source,"
                " payload, outcome) select id, 1, 'e', 't', 's', '{}', 'applied' from instances"
            )
        )
        await conn.execute(text("analyze instances"))
        await conn.execute(text("analyze history"))
    async with driver_connection(db) as conn:
        plan = "\n".join(
            row[0]
            for row in await conn.fetch(
                "explain " + PRUNE_HISTORY, T0, *_WALK_START, HISTORY_PAGE, 5000
            )
        )
    assert "instances_ended" in plan, plan
    assert "history_instance" in plan, plan
    assert "history_pkey" in plan, plan
    assert "Seq Scan" not in plan, plan
