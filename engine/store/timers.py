"""Timer rows outside the runtime's one-statement writes: operator actions and durable
retries set, take, restore and release them (the scheduler's claim is in statements)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.store.database import driver_connection

# One timer per (instance, name): setting it again moves it and frees any claim on it.
SET_TIMER = """
insert into timers (id, instance_id, name, state, due_at) values ($1, $2, $3, $4, $5)
on conflict (instance_id, name) do update
set id = excluded.id, state = excluded.state, due_at = excluded.due_at, claimed_until = null
"""

RESTORE_TIMER = """
insert into timers (id, instance_id, name, state, due_at) values ($1, $2, $3, $4, $5)
on conflict do nothing
"""


async def set_timer(
    conn: asyncpg.Connection, instance_id: uuid.UUID, name: str, state: str, due_at: datetime
) -> None:
    """Set (or move) the instance's timer ``name`` to fire at ``due_at``."""
    await conn.execute(SET_TIMER, uuid.uuid4(), instance_id, name, state, due_at)


async def restore(
    conn: asyncpg.Connection,
    timer_id: uuid.UUID,
    instance_id: uuid.UUID,
    name: str,
    state: str,
    due_at: datetime,
) -> None:
    """Put a fired timer back (unless its name is taken again), so it can fire anew."""
    await conn.execute(RESTORE_TIMER, timer_id, instance_id, name, state, due_at)


async def take(conn: asyncpg.Connection, timer_id: uuid.UUID) -> bool:
    """Delete the timer; whether it still existed (a firing that is still live)."""
    return await conn.fetchval("delete from timers where id = $1 returning 1", timer_id) is not None


async def delete(conn: asyncpg.Connection, instance_id: uuid.UUID, name: str | None = None) -> None:
    """Delete the instance's timers (only the one called ``name``, if given)."""
    if name is None:
        await conn.execute("delete from timers where instance_id = $1", instance_id)
    else:
        await conn.execute(
            "delete from timers where instance_id = $1 and name = $2", instance_id, name
        )


async def release_claims(conn: asyncpg.Connection, instance_id: uuid.UUID, but: str) -> None:
    """Let the next scheduler poll fire the instance's claimed timers (all but ``but``)."""
    await conn.execute(
        "update timers set claimed_until = null where instance_id = $1 and name <> $2",
        instance_id,
        but,
    )


@dataclass(frozen=True, slots=True)
class PendingTimer:
    name: str
    state: str
    due_at: datetime


async def pending(db: AsyncEngine, instance_id: uuid.UUID) -> list[PendingTimer] | None:
    """The instance's timers, soonest first; None when there is no such instance."""
    async with driver_connection(db) as conn:
        rows = await conn.fetch(
            "select t.name, t.state, t.due_at from instances i"
            " left join timers t on t.instance_id = i.id"
            " where i.id = $1 order by t.due_at, t.name",
            instance_id,
        )
    if not rows:
        return None
    return [PendingTimer(r["name"], r["state"], r["due_at"]) for r in rows if r["name"] is not None]
