"""Rows of ``api_keys``: the statements behind ``engine.auth`` (which owns the rules:
key format, hashing, scopes). Only the SHA-256 of a key is ever stored or looked up.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.store.database import driver_connection, driver_transaction

INSERT = "insert into api_keys (id, name, prefix, key_hash, scopes) values ($1, $2, $3, $4, $5)"

# Every request's authentication: one unique-index lookup.
LIVE_BY_HASH = (
    "select id, name, prefix, scopes from api_keys where key_hash = $1 and revoked_at is null"
)

ALL = (
    "select id, name, prefix, scopes, created_at, revoked_at from api_keys"
    " order by created_at, prefix"
)

REVOKE = "update api_keys set revoked_at = now() where prefix = $1 and revoked_at is null"


async def insert(
    db: AsyncEngine,
    key_id: uuid.UUID,
    name: str,
    prefix: str,
    key_hash: bytes,
    scopes: Sequence[str],
) -> None:
    async with driver_transaction(db) as conn:
        await conn.execute(INSERT, key_id, name, prefix, key_hash, list(scopes))


async def live_by_hash(db: AsyncEngine, key_hash: bytes) -> asyncpg.Record | None:
    """The live (not revoked) key with ``key_hash``: id, name, prefix, scopes."""
    async with driver_connection(db) as conn:
        row: asyncpg.Record | None = await conn.fetchrow(LIVE_BY_HASH, key_hash)
    return row


async def all_keys(db: AsyncEngine) -> list[asyncpg.Record]:
    """Every key, live and revoked, oldest first."""
    async with driver_connection(db) as conn:
        rows: list[asyncpg.Record] = await conn.fetch(ALL)
    return rows


async def revoke(db: AsyncEngine, prefix: str) -> bool:
    """Revoke the live key with ``prefix``; False when there is none."""
    async with driver_transaction(db) as conn:
        status: str = await conn.execute(REVOKE, prefix)
    return status.endswith(" 1")


__all__ = ["all_keys", "insert", "live_by_hash", "revoke"]
