"""Apply Alembic migrations programmatically (``conveyor migrate``, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from engine.settings import Settings
from engine.store.database import create_engine

ROOT = Path(__file__).resolve().parents[2]


def alembic_config() -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    return cfg


async def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the configured database (and schema, if set) up to ``revision``."""
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            # One migrator at a time, even with several processes starting together.
            await conn.execute(text("select pg_advisory_lock(7314159)"))
            try:
                if settings.database_schema:
                    await conn.execute(
                        text(f'create schema if not exists "{settings.database_schema}"')
                    )
                conn.info["conveyor_schema"] = settings.database_schema

                def _upgrade(sync_conn: Connection) -> None:
                    cfg = alembic_config()
                    cfg.attributes["connection"] = sync_conn
                    command.upgrade(cfg, revision)

                await conn.run_sync(_upgrade)
                await conn.commit()
            finally:
                await conn.execute(text("select pg_advisory_unlock(7314159)"))
                await conn.commit()
    finally:
        await engine.dispose()
