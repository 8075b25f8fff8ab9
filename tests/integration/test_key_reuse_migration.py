"""Migration 0007 (key reuse): its downgrade refuses while a key has been reused, and
otherwise restores the unique constraint; upgrading again keeps the instances."""

from __future__ import annotations

import uuid

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.migrations import alembic_config, upgrade
from tests.integration.test_runtime import rows

INSERT = text(
    "insert into instances (id, workflow, version, business_key, state, data, status,"
    " state_entered_at) values (:id, 'test.ticket', 1, :key, 'closed', '{}', 'completed', now())"
)


async def downgrade(settings: Settings, revision: str) -> None:
    """Take the test's schema down to ``revision`` (as ``engine.store.migrations.upgrade``
    takes it up)."""
    db = create_engine(settings, pool_size=1)
    try:
        async with db.connect() as conn:
            conn.info["conveyor_schema"] = settings.database_schema

            def _downgrade(sync_conn: Connection) -> None:
                cfg = alembic_config()
                cfg.attributes["connection"] = sync_conn
                command.downgrade(cfg, revision)

            await conn.run_sync(_downgrade)
            await conn.commit()
    finally:
        await db.dispose()


async def constraints_and_indexes(db: AsyncEngine) -> set[str]:
    found = await rows(
        db,
        "select conname from pg_constraint where conrelid = 'instances'::regclass"
        " union select indexname from pg_indexes where tablename = 'instances'"
        " and schemaname = current_schema()",
    )
    return {name for (name,) in found}


async def test_the_downgrade_refuses_while_a_key_is_reused_then_restores_the_constraint(
    settings: Settings, db: AsyncEngine
) -> None:
    old, new, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with db.begin() as conn:
        await conn.execute(INSERT, {"id": old, "key": "T-1"})
        await conn.execute(
            text("update instances set key_released = true where id = :id"), {"id": old}
        )
        await conn.execute(INSERT, {"id": new, "key": "T-1"})
        await conn.execute(INSERT, {"id": other, "key": "T-2"})

    with pytest.raises(RuntimeError, match=r"1 instance\(s\) gave their business key"):
        await downgrade(settings, "0006")
    assert "instances_key_holder" in await constraints_and_indexes(db)  # nothing changed

    async with db.begin() as conn:
        await conn.execute(text("delete from instances where key_released"))
    await downgrade(settings, "0006")

    names = await constraints_and_indexes(db)
    assert "instances_workflow_business_key" in names
    assert not names & {"instances_key_holder", "instances_released_keys"}
    columns = await rows(
        db,
        "select column_name from information_schema.columns"
        " where table_schema = current_schema() and table_name = 'instances'",
    )
    assert ("key_released",) not in columns

    await upgrade(settings)
    assert sorted(await rows(db, "select id, key_released from instances")) == sorted(
        [(new, False), (other, False)]
    )
    names = await constraints_and_indexes(db)
    assert {"instances_key_holder", "instances_released_keys"} <= names
    assert "instances_workflow_business_key" not in names
