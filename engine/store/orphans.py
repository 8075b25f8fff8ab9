"""Counting live instances per (workflow, version, state), for :mod:`engine.orphans`.

One ``group by`` over the live statuses, served by the ``instances_state_age`` index
(which includes version and status).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.orphans import LiveCount
from engine.store.database import driver_connection
from engine.store.queries import RUNNING_STATUSES


async def live_counts(db: AsyncEngine) -> list[LiveCount]:
    """Live (active, retrying, failed) instances per (workflow, version, state)."""
    async with driver_connection(db) as conn:
        rows = await conn.fetch(
            "select workflow, version, state, count(*) as n from instances"
            f" where {RUNNING_STATUSES} group by 1, 2, 3"
        )
    return [LiveCount(r["workflow"], r["version"], r["state"], r["n"]) for r in rows]


__all__ = ["live_counts"]
