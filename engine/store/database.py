"""The async SQLAlchemy engine (asyncpg) and a readiness probe.

Surviving a PostgreSQL restart. The hot paths talk to the pooled asyncpg connection
directly (``driver_transaction``, ``driver_connection``), which bypasses SQLAlchemy's own
disconnect handling, so both halves of it are done here:

* a connection that fails with a disconnect error inside one of those blocks is
  invalidated (closed and dropped from the pool), never checked in as healthy;
* on checkout, a pooled connection that asyncpg already knows is closed (the server went
  away while it sat in the pool) invalidates the whole pool, as SQLAlchemy does when it
  detects a restart: every connection older than that moment is replaced on its next
  checkout. The check reads a flag; it costs no round trip, unlike ``pool_pre_ping``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from weakref import WeakKeyDictionary

import asyncpg
import orjson
from sqlalchemy import event, make_url, text
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool

from engine.errors import DependencyUnavailable
from engine.settings import Settings
from engine.transient import is_disconnect

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
    db = create_async_engine(
        url,
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=10,
        connect_args=connect_args,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )
    guard = _PoolGuard()
    _guards[db.sync_engine.pool] = guard
    event.listen(db.sync_engine.pool, "checkout", guard.on_checkout)
    return db


class _PoolGuard:
    """Pool checkout hook: refuses connections the server has closed.

    A connection closed while pooled, or any connection after one died in use, means the
    server restarted or killed our sessions: every older pooled connection is suspect too,
    so the pool is invalidated (``InvalidatePoolError``) and they are replaced lazily.
    """

    __slots__ = ("suspect",)

    def __init__(self) -> None:
        self.suspect = False

    def on_checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if self.suspect or dbapi_connection.driver_connection.is_closed():
            self.suspect = False
            raise InvalidatePoolError("a pooled connection was closed by the server")


_guards: WeakKeyDictionary[Pool, _PoolGuard] = WeakKeyDictionary()


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def ping(db: AsyncEngine, timeout: float) -> None:
    """Run ``SELECT 1``; raise DependencyUnavailable when PostgreSQL does not answer in time."""
    try:
        async with asyncio.timeout(timeout):
            async with db.connect() as conn:
                await conn.execute(text("select 1"))
    except Exception as exc:  # any failure to answer means "down"; the reason is kept
        raise DependencyUnavailable(f"postgresql: {type(exc).__name__}: {exc}".strip()) from exc


@asynccontextmanager
async def driver_transaction(db: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's asyncpg driver inside one transaction (the hot path).

    SQLAlchemy owns the pool; the hot path talks to asyncpg directly so that each
    set-based statement is prepared once per connection and costs one round trip.
    """
    async with db.connect() as conn:
        driver = await _driver_of(conn)
        try:
            async with driver.transaction():
                yield driver
        except Exception as exc:
            if is_disconnect(exc):
                await _invalidate(conn, exc)
            raise


@asynccontextmanager
async def driver_connection(db: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's asyncpg driver, outside any explicit transaction (reads)."""
    async with db.connect() as conn:
        driver = await _driver_of(conn)
        try:
            yield driver
        except Exception as exc:
            if is_disconnect(exc):
                await _invalidate(conn, exc)
            raise


async def _driver_of(conn: AsyncConnection) -> asyncpg.Connection:
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


async def _invalidate(conn: AsyncConnection, exc: BaseException) -> None:
    """Drop a connection that failed with a disconnect error (it is closed, not pooled);
    a second failure while closing it changes nothing."""
    guard = _guards.get(conn.sync_engine.pool)
    if guard is not None:
        guard.suspect = True  # its siblings probably died with it
    # Closing a dead connection may fail too; it is dropped either way.
    with contextlib.suppress(Exception):
        await conn.invalidate(exc if isinstance(exc, Exception) else None)
