"""Retention prunes old inbox ids and published outbox rows, and nothing else."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.store.retention import prune

NOW = datetime(2026, 3, 1, tzinfo=UTC)


async def test_prune_deletes_only_rows_past_their_retention(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        for i, age in enumerate([1, 10, 20, 30]):
            await conn.execute(
                text(
                    "insert into inbox (instance_id, event_id, outcome, processed_at)"
                    " values (:i, :e, 'applied', :t)"
                ),
                {"i": uuid.uuid4(), "e": f"e{i}", "t": NOW - timedelta(days=age)},
            )
        for i, published in enumerate([None, NOW - timedelta(hours=1), NOW - timedelta(days=3)]):
            await conn.execute(
                text(
                    "insert into outbox (message_id, topic, value, published_at)"
                    " values (gen_random_uuid(), 't', :v, :p)"
                ),
                {"v": f"m{i}".encode(), "p": published},
            )
        for key, age in (("old", 20), ("new", 1)):
            await conn.execute(
                text(
                    "insert into idempotent_responses (api_key_id, key, endpoint, request_hash,"
                    " status, body, created_at)"
                    " values (:a, :k, 'start:order', '\\x00', 201, '\\x00', :t)"
                ),
                {"a": uuid.uuid4(), "k": key, "t": NOW - timedelta(days=age)},
            )
    pruned = await prune(
        db,
        now=NOW,
        inbox_retention=timedelta(days=14),
        outbox_retention=timedelta(hours=24),
        batch=1,
    )
    assert (pruned.inbox, pruned.outbox, pruned.idempotent_responses) == (2, 1, 1)
    async with db.connect() as conn:
        inbox = (await conn.execute(text("select event_id from inbox order by 1"))).scalars().all()
        outbox = (await conn.execute(text("select value from outbox order by id"))).scalars().all()
    assert inbox == ["e0", "e1"]
    assert outbox == [b"m0", b"m1"]  # unpublished rows are never pruned
    async with db.connect() as conn:
        keys = (await conn.execute(text("select key from idempotent_responses"))).scalars().all()
    assert keys == ["new"]


async def test_prune_deletes_an_old_event_id_of_one_instance_only(db: AsyncEngine) -> None:
    """Event ids are unique per instance: an old row does not take a fresh one of the same
    id for another instance with it, nor an old stored response another API key's."""
    old, fresh = uuid.uuid4(), uuid.uuid4()
    async with db.begin() as conn:
        for instance_id, age in ((old, 30), (fresh, 1)):
            await conn.execute(
                text(
                    "insert into inbox (instance_id, event_id, outcome, processed_at)"
                    " values (:i, 'same', 'applied', :t)"
                ),
                {"i": instance_id, "t": NOW - timedelta(days=age)},
            )
            await conn.execute(
                text(
                    "insert into idempotent_responses (api_key_id, key, endpoint, request_hash,"
                    " status, body, created_at)"
                    " values (:a, 'same', 'start:order', '\\x00', 201, '\\x00', :t)"
                ),
                {"a": instance_id, "t": NOW - timedelta(days=age)},
            )
    pruned = await prune(
        db, now=NOW, inbox_retention=timedelta(days=14), outbox_retention=timedelta(hours=24)
    )
    assert (pruned.inbox, pruned.idempotent_responses) == (1, 1)
    async with db.connect() as conn:
        inbox = (await conn.execute(text("select instance_id from inbox"))).scalars().all()
        stored = (
            (await conn.execute(text("select api_key_id from idempotent_responses")))
            .scalars()
            .all()
        )
    assert inbox == [fresh]
    assert stored == [fresh]


async def test_old_schedule_ticks_go_but_each_schedule_keeps_its_newest(db: AsyncEngine) -> None:
    ticks = [("nightly", 40), ("nightly", 30), ("nightly", 20), ("monthly", 60), ("hourly", 1)]
    async with db.begin() as conn:
        for n, (schedule, age) in enumerate(ticks):
            at = NOW - timedelta(days=age)
            await conn.execute(
                text(
                    "insert into schedule_ticks (schedule, tick_id, tick, manual, fired_at,"
                    " outcome, lateness_seconds) values (:s, :i, :t, false, :t, 'published', 0)"
                ),
                {"s": schedule, "i": f"{schedule}@{n}", "t": at},
            )
    pruned = await prune(
        db,
        now=NOW,
        inbox_retention=timedelta(days=14),
        outbox_retention=timedelta(hours=24),
        batch=1,
    )
    assert pruned.schedule_ticks == 2
    async with db.connect() as conn:
        kept = (
            (await conn.execute(text("select tick_id from schedule_ticks order by id")))
            .scalars()
            .all()
        )
    # The monthly schedule's only tick is 60 days old and stays: it is its last outcome.
    assert kept == ["nightly@2", "monthly@3", "hourly@4"]
