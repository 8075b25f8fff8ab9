"""The database set-up: migrations, schema isolation, a round trip through PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.migrations import alembic_config, upgrade


async def test_instance_row_round_trips_through_postgres(db: AsyncEngine) -> None:
    instance_id = uuid.uuid4()
    now = datetime.now(UTC)
    async with db.begin() as conn:
        await conn.execute(
            text(
                "insert into instances (id, workflow, version, business_key, state, data,"
                " status, state_entered_at) values (:id, 'order', 1, 'ORD-1', 'placed',"
                " cast(:data as jsonb), 'active', :now)"
            ),
            {"id": instance_id, "data": '{"total": 12.5, "items": ["a"]}', "now": now},
        )
    async with db.connect() as conn:
        row = (
            await conn.execute(
                text("select business_key, data, revision from instances where id = :id"),
                {"id": instance_id},
            )
        ).one()
    assert row.business_key == "ORD-1"
    assert row.data == {"total": 12.5, "items": ["a"]}
    assert row.revision == 0


async def test_each_test_schema_is_isolated(db: AsyncEngine, settings: Settings) -> None:
    async with db.connect() as conn:
        schema = (await conn.execute(text("select current_schema()"))).scalar_one()
        tables = set(
            (
                await conn.execute(
                    text("select tablename from pg_tables where schemaname = :s"), {"s": schema}
                )
            ).scalars()
        )
    assert schema == settings.database_schema
    assert {"instances", "history", "inbox", "timers", "outbox"} <= tables


async def test_business_key_is_unique_per_workflow(db: AsyncEngine) -> None:
    insert = text(
        "insert into instances (id, workflow, version, business_key, state, data, status,"
        " state_entered_at) values (:id, :wf, 1, 'K-1', 's', '{}'::jsonb, 'active', now())"
        " on conflict do nothing returning id"
    )
    async with db.begin() as conn:
        first = (await conn.execute(insert, {"id": uuid.uuid4(), "wf": "order"})).first()
        again = (await conn.execute(insert, {"id": uuid.uuid4(), "wf": "order"})).first()
        other = (await conn.execute(insert, {"id": uuid.uuid4(), "wf": "inbound"})).first()
    assert first is not None
    assert again is None
    assert other is not None


async def test_migrate_twice_is_a_no_op(settings: Settings) -> None:
    await upgrade(settings)
    db = create_engine(settings, pool_size=1)
    try:
        async with db.connect() as conn:
            version = (
                await conn.execute(text("select version_num from alembic_version"))
            ).scalar_one()
    finally:
        await db.dispose()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert version == head
