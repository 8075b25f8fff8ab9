"""Apply Alembic migrations programmatically (``conveyor migrate``, tests)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.schema import metadata

ROOT = Path(__file__).resolve().parents[2]
VERSION_TABLE = "alembic_version"


def context_options(schema: str | None) -> dict[str, Any]:
    """What ``alembic/env.py`` tells Alembic's migration context, and what the schema check
    (``tests/integration/test_schema.py``) compares with: the declared tables
    (``engine.store.schema``), the version table in the configured schema, and a strict
    autogenerate comparison (column types and server defaults too).

    Only the connection's own schema (its ``search_path``) is compared
    (``include_schemas`` stays off), and Alembic's version table is not a declared table.
    """
    return {
        "target_metadata": metadata,
        "version_table": VERSION_TABLE,
        "version_table_schema": schema,
        "compare_type": True,
        "compare_server_default": True,
        "include_name": _declared_or_not_a_table,
    }


def _declared_or_not_a_table(
    name: str | None, type_: str, _parent_names: Mapping[str, str | None]
) -> bool:
    return not (type_ == "table" and name == VERSION_TABLE)


def script_location() -> Path:
    """The migration scripts (``env.py``, ``versions/``): a checkout's ``alembic/``, which
    an installed wheel ships inside the package as ``engine/migrations/``."""
    packaged = Path(__file__).resolve().parents[1] / "migrations"
    return packaged if (packaged / "env.py").is_file() else ROOT / "alembic"


def alembic_config() -> Config:
    """Alembic's configuration, built in code: it needs no ``alembic.ini`` (a wheel has
    none), though a checkout's is read when present."""
    ini = ROOT / "alembic.ini"
    cfg = Config(str(ini) if ini.is_file() else None)
    cfg.set_main_option("script_location", str(script_location()))
    return cfg


async def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the configured database (and schema, if set) up to ``revision``."""
    db = create_engine(settings, pool_size=1)
    try:
        async with db.connect() as conn:
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
        await db.dispose()
