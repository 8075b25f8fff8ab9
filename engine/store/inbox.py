"""The inbox outside the runtime's one-statement writes (which record processed events)."""

from __future__ import annotations

import uuid

import asyncpg


async def forget(conn: asyncpg.Connection, instance_id: uuid.UUID, event_id: str) -> None:
    """Drop the inbox row of ``event_id`` for this instance, so the event may apply again
    (an operator's retry of the event that failed the instance)."""
    await conn.execute(
        "delete from inbox where instance_id = $1 and event_id = $2", instance_id, event_id
    )
