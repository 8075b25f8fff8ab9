"""Rows of ``console_sessions``: the statements behind the console's sign-in
(:mod:`api.console.sessions` owns the rules: token, expiry, cookie)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.store.database import driver_connection, driver_transaction

# A session is live while it has not expired and its key is not revoked.
LIVE = """
select s.csrf_token, s.expires_at, k.id, k.name, k.prefix, k.scopes
from console_sessions s join api_keys k on k.id = s.api_key_id
where s.token_hash = $1 and s.expires_at > $2 and k.revoked_at is null
"""


async def create(
    db: AsyncEngine,
    token_hash: bytes,
    api_key_id: uuid.UUID,
    csrf_token: str,
    expires_at: datetime,
    now: datetime,
) -> None:
    """Open a session (and drop expired ones, a few at a time)."""
    async with driver_transaction(db) as conn:
        await conn.execute(
            "delete from console_sessions where token_hash in (select token_hash from"
            " console_sessions where expires_at <= $1 limit 100)",
            now,
        )
        await conn.execute(
            "insert into console_sessions (token_hash, api_key_id, csrf_token, created_at,"
            " expires_at) values ($1, $2, $3, $4, $5)",
            token_hash,
            api_key_id,
            csrf_token,
            now,
            expires_at,
        )


async def live(db: AsyncEngine, token_hash: bytes, now: datetime) -> asyncpg.Record | None:
    """The live session with ``token_hash`` and its key: csrf_token, expires_at, id, name,
    prefix, scopes."""
    async with driver_connection(db) as conn:
        row: asyncpg.Record | None = await conn.fetchrow(LIVE, token_hash, now)
    return row


async def delete(db: AsyncEngine, token_hash: bytes) -> None:
    async with driver_transaction(db) as conn:
        await conn.execute("delete from console_sessions where token_hash = $1", token_hash)


__all__ = ["create", "delete", "live"]
