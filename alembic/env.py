"""Alembic environment: runs migrations on Conveyor's async engine.

Programmatic callers (``engine.store.migrations``) pass an open connection in
``config.attributes["connection"]``; the ``alembic`` command line builds an engine from
the settings.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.migrations import context_options

config = context.config


def _run(connection: Connection) -> None:
    schema = connection.info.get("conveyor_schema")
    # target_metadata (engine.store.schema) is what `alembic check` compares with.
    context.configure(
        connection=connection,
        transaction_per_migration=False,
        **context_options(schema),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    settings = Settings()
    db = create_engine(settings, pool_size=1)
    try:
        async with db.connect() as conn:
            if settings.database_schema:
                await conn.execute(
                    text(f'create schema if not exists "{settings.database_schema}"')
                )
                await conn.commit()
            conn.info["conveyor_schema"] = settings.database_schema
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await db.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `conveyor migrate`")

connection = config.attributes.get("connection")
if connection is None:
    asyncio.run(_run_async())
else:
    _run(connection)
