"""Counting instances for ``/v1/stats``: by workflow, version, state and status, with
the oldest time in state and how many are past their state's SLA.

Two set-based queries, both served by the ``instances_state_age`` index (index-only once
the table is vacuumed):

* one ``group by`` over every instance (of one workflow): the counts. It reads every
  entry, so it grows with the table (about 0.4 s of CPU per million instances);
* one row per (workflow, version, state) that has running instances, with two probes of
  the index each: the earliest ``state_entered_at`` of a running instance (a ``min`` the
  planner answers from the start of the state's range), and the running instances that
  entered before ``now - sla`` (the start of the range, up to the SLA's cut-off).

Computing the oldest time in state in the ``group by`` instead (``min(...) filter``)
costs as much again as the counts: a comparison and an aggregate for every instance,
completed and cancelled ones included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.slas import RUNNING, StateSla
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
            "select workflow, version, state, status, count(*) as n"
            f" from instances where {where} group by workflow, version, state, status",
            *arg,
        )
        for row in rows:
            key = (row["workflow"], row["version"], row["state"])
            counts.setdefault(key, StateCount(*key)).by_status[row["status"]] = row["n"]
        cutoffs = {(s.workflow, s.version, s.state): now - s.sla for s in slas}
        running = [key for key, count in counts.items() if _RUNNING.intersection(count.by_status)]
        if not running:
            return [counts[key] for key in sorted(counts)]
        rows = await conn.fetch(
            f"select k.workflow, k.version, k.state, {OLDEST} as oldest, {BREACHED} as breached"
            " from unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[])"
            " as k(workflow, version, state, cutoff)",
            [key[0] for key in running],
            [key[1] for key in running],
            [key[2] for key in running],
            [cutoffs.get(key) for key in running],
        )
    for row in rows:
        count = counts[(row["workflow"], row["version"], row["state"])]
        count.oldest_running_since = row["oldest"]
        count.sla_breached = row["breached"]
    return [counts[key] for key in sorted(counts)]


_RUNNING = frozenset(status.value for status in RUNNING)

# Per row of k: running instances of its (workflow, version, state), as index probes.
_OF_K = (
    "from instances i where i.workflow = k.workflow and i.state = k.state"
    f" and i.version = k.version and {RUNNING_STATUSES}"
)
OLDEST = f"(select min(i.state_entered_at) {_OF_K})"
# No SLA: the cut-off is null, which no state_entered_at is before.
BREACHED = f"(select count(*) {_OF_K} and i.state_entered_at < k.cutoff)"


__all__ = ["StateCount", "state_counts"]
