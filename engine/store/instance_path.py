"""The states one instance has been in, from its history (the console draws its path)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.store.database import driver_connection

# Every state a trigger took it to (a rejected trigger took it nowhere). Served by the
# ``history_instance`` index.
VISITED_STATES = """
select distinct to_state from history
where instance_id = $1 and to_state is not null and outcome <> 'rejected'
"""


async def visited_states(db: AsyncEngine, instance_id: uuid.UUID) -> frozenset[str]:
    """The states the instance's history shows it entered (names of any version)."""
    async with driver_connection(db) as conn:
        rows = await conn.fetch(VISITED_STATES, instance_id)
    return frozenset(r["to_state"] for r in rows)


__all__ = ["VISITED_STATES", "visited_states"]
