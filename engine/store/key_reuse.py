"""Business-key reuse in the store: an ended instance gives its key up to a newer one.

A workflow declared with ``key_reuse = "after_end"`` may start an instance with the key of
one that has completed or been cancelled (``Runtime.start``). In one transaction the old
instance is marked ``key_released`` (:func:`release_key`) and the new one inserted; the
unique index ``instances_key_holder`` (migration 0007) keeps one holder per key. Lookups
by key find the holder; :func:`find_with_earlier` also lists the ones before it.
"""

from __future__ import annotations

import uuid

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.errors import InstanceNotFound
from engine.model import Instance
from engine.store.database import driver_connection
from engine.store.queries import instance_from_row
from engine.store.statements import INSTANCE_COLUMNS

# Only an ended instance that still holds its key gives it up: a start that lost the race
# to another (which released it first) updates nothing, and answers as for the new holder.
RELEASE_KEY = """
update instances set key_released = true
where id = $1 and status in ('completed', 'cancelled') and not key_released
"""

# The holder of a key and up to $3 instances that held it before, newest first, read in
# one snapshot (``instances_key_holder``, then ``instances_released_keys``).
FIND_WITH_EARLIER = f"""
(select {INSTANCE_COLUMNS}, key_released from instances
 where workflow = $1 and business_key = $2 and not key_released)
union all
(select {INSTANCE_COLUMNS}, key_released from instances
 where workflow = $1 and business_key = $2 and key_released
 order by created_at desc, id desc
 limit $3)
"""


async def release_key(conn: asyncpg.Connection, instance_id: uuid.UUID) -> bool:
    """Mark ``instance_id`` as having given its key up, in the caller's transaction (which
    holds its row lock until it commits): False when it is not ended or already did."""
    status: str = await conn.execute(RELEASE_KEY, instance_id)
    return status == "UPDATE 1"


async def find_with_earlier(
    db: AsyncEngine, workflow: str, business_key: str, *, limit: int
) -> tuple[Instance, list[Instance]]:
    """The instance holding ``business_key`` of ``workflow`` and up to ``limit`` instances
    that held it before, newest first."""
    async with driver_connection(db) as conn:
        rows = await conn.fetch(FIND_WITH_EARLIER, workflow, business_key, limit)
    holders = [instance_from_row(r) for r in rows if not r["key_released"]]
    if not holders:
        raise InstanceNotFound(f"no {workflow} instance with business key {business_key!r}")
    return holders[0], [instance_from_row(r) for r in rows if r["key_released"]]


__all__ = ["find_with_earlier", "release_key"]
