"""The async SQLAlchemy engine (asyncpg) and a readiness probe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from engine.errors import DependencyUnavailable
from engine.settings import Settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    """Build the process's engine. Call from an entry point or listener, never at import."""
    server_settings = {"application_name": "conveyor"}
    if settings.database_schema:
        server_settings["search_path"] = settings.database_schema
    connect_args: dict[str, Any] = {"server_settings": server_settings, "timeout": 5}
    url = make_url(settings.database_url)
    if url.host in LOOPBACK and "ssl" not in url.query and "sslmode" not in url.query:
        # TLS over loopback protects nothing and costs a third of a small transaction.
        connect_args["ssl"] = False
    return create_async_engine(
        url,
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=10,
        connect_args=connect_args,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def ping(engine: AsyncEngine, timeout: float) -> None:
    """Run ``SELECT 1``; raise DependencyUnavailable when PostgreSQL does not answer in time."""
    try:
        async with asyncio.timeout(timeout):
            async with engine.connect() as conn:
                await conn.execute(text("select 1"))
    except Exception as exc:  # any failure to answer means "down"; the reason is kept
        raise DependencyUnavailable(f"postgresql: {type(exc).__name__}: {exc}".strip()) from exc


@asynccontextmanager
async def driver_transaction(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's asyncpg driver inside one transaction (the hot path).

    SQLAlchemy owns the pool; the hot path talks to asyncpg directly so that each
    set-based statement is prepared once per connection and costs one round trip.
    """
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        async with driver.transaction():
            yield driver


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's asyncpg driver, outside any explicit transaction (reads)."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        yield driver
