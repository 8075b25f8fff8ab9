"""What the metrics read from the database at scrape time: the outbox backlog, overdue
timers and instances past their state's SLA.

Each query is cheap on a healthy system: the outbox and timer ones walk partial or
ordered indexes over rows that should be few (unpublished messages, timers past due), and
the SLA one reads ``instances_state_age`` for the states that declare an SLA only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.slas import RUNNING, StateSla
from engine.store.database import driver_connection

# The count of unpublished rows and the creation time of the oldest (the first by id:
# ids grow with time, so ``outbox_pending`` serves the sub-select with one index probe).
OUTBOX_BACKLOG = """
select count(*) as backlog,
       (select created_at from outbox where published_at is null order by id limit 1) as oldest
from outbox where published_at is null
"""

# Timers due before $1 that have not fired yet (claimed or not), and the earliest due time.
# Not those of failed instances: they wait for an operator's retry (the SLA and status
# figures show those instances).
OVERDUE_TIMERS = """
select count(*) as overdue, min(due_at) as oldest from timers t
where due_at < $1
  and not exists (select 1 from instances i where i.id = t.instance_id and i.status = 'failed')
"""

# Per (workflow, state) that declares an SLA: instances still in that state (status in $6)
# for longer than the SLA at $5. $1..$4: workflows, versions, states and SLAs in seconds,
# one element per declared (workflow, version, state).
SLA_BREACHES = """
select s.workflow, s.state, count(i.id) as breached
from unnest($1::text[], $2::int4[], $3::text[], $4::float8[])
     as s(workflow, version, state, sla_seconds)
left join instances i
  on i.workflow = s.workflow and i.state = s.state and i.version = s.version
 and i.status = any($6::text[])
 and i.state_entered_at < $5::timestamptz - make_interval(secs => s.sla_seconds)
group by s.workflow, s.state
"""


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """Unpublished outbox messages, and when the oldest of them was written."""

    messages: int
    oldest_created_at: datetime | None


@dataclass(frozen=True, slots=True)
class OverdueTimers:
    """Timers past their due time that have not fired, and the earliest due time."""

    timers: int
    oldest_due_at: datetime | None


async def outbox_backlog(db: AsyncEngine) -> OutboxBacklog:
    """How many outbox messages wait for the relay, and since when (all relays together)."""
    async with driver_connection(db) as conn:
        row = await conn.fetchrow(OUTBOX_BACKLOG)
    assert row is not None
    return OutboxBacklog(int(row["backlog"]), row["oldest"])


async def overdue_timers(db: AsyncEngine, now: datetime) -> OverdueTimers:
    """Timers that should have fired before ``now`` and have not."""
    async with driver_connection(db) as conn:
        row = await conn.fetchrow(OVERDUE_TIMERS, now)
    assert row is not None
    return OverdueTimers(int(row["overdue"]), row["oldest"])


async def sla_breaches(
    db: AsyncEngine, slas: Sequence[StateSla], now: datetime
) -> dict[tuple[str, str], int]:
    """Per (workflow, state) with an SLA: how many instances still in it (their status is
    one of :data:`engine.slas.RUNNING`) are past it at ``now``."""
    if not slas:
        return {}
    async with driver_connection(db) as conn:
        rows = await conn.fetch(
            SLA_BREACHES,
            [s.workflow for s in slas],
            [s.version for s in slas],
            [s.state for s in slas],
            [s.sla.total_seconds() for s in slas],
            now,
            [status.value for status in RUNNING],
        )
    return {(r["workflow"], r["state"]): int(r["breached"]) for r in rows}


__all__ = [
    "OUTBOX_BACKLOG",
    "OVERDUE_TIMERS",
    "SLA_BREACHES",
    "OutboxBacklog",
    "OverdueTimers",
    "outbox_backlog",
    "overdue_timers",
    "sla_breaches",
]
