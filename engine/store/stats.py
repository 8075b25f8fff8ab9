"""Counting instances for ``/v1/stats``: by workflow, version, state and status, with
the oldest time in state and how many are past their state's SLA.

Two set-based queries, both served by the ``instances_state_age`` index (an index-only
scan once the table is vacuumed): one ``group by`` over every instance (of one workflow),
and one count per state that declares an SLA, over the range of instances that entered
it before ``now - sla``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.slas import StateSla
from engine.store.database import driver_connection
from engine.store.queries import RUNNING_STATUSES, Arguments


@dataclass(slots=True)
class StateCount:
    """The instances of one (workflow, version, state)."""

    workflow: str
    version: int
    state: str
    by_status: dict[str, int] = field(default_factory=dict)
    oldest_running_since: datetime | None = None  # earliest state_entered_at, running ones
    sla_breached: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


async def state_counts(
    db: AsyncEngine, *, workflow: str | None, now: datetime, slas: Sequence[StateSla]
) -> list[StateCount]:
    """Counts per (workflow, version, state), ordered by workflow, version, state."""
    arg = Arguments()
    where = "true" if workflow is None else f"workflow = {arg(workflow)}"
    counts: dict[tuple[str, int, str], StateCount] = {}
    async with driver_connection(db) as conn:
        rows = await conn.fetch(
            "select workflow, version, state, status, count(*) as n,"
            f" min(state_entered_at) filter (where {RUNNING_STATUSES}) as oldest"
            f" from instances where {where} group by workflow, version, state, status",
            *arg,
        )
        for row in rows:
            key = (row["workflow"], row["version"], row["state"])
            count = counts.setdefault(key, StateCount(*key))
            count.by_status[row["status"]] = row["n"]
            oldest = row["oldest"]
            if oldest is not None and (
                count.oldest_running_since is None or oldest < count.oldest_running_since
            ):
                count.oldest_running_since = oldest
        for sla in slas:
            key = (sla.workflow, sla.version, sla.state)
            if key not in counts or (workflow is not None and sla.workflow != workflow):
                continue
            counts[key].sla_breached = await conn.fetchval(
                "select count(*) from instances where workflow = $1 and state = $2"
                f" and state_entered_at < $3 and version = $4 and {RUNNING_STATUSES}",
                sla.workflow,
                sla.state,
                now - sla.sla,
                sla.version,
            )
    return [counts[key] for key in sorted(counts)]


__all__ = ["StateCount", "state_counts"]
