"""Schedule rows and tick records (tables ``schedules`` and ``schedule_ticks``, 0010).

The runner's round is one transaction on one connection: :data:`CLAIM_DUE` locks the due
rows of the schedules this process runs (``for update skip locked``: another runner
passes them by), the ticks are fired on the same connection, then :func:`record_ticks`
and :func:`advance` write what happened. Everything else here is the operators' side:
listing, pausing, resuming, the ticks' history.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.store.database import driver_connection, driver_transaction

# Due rows ($1: now) of the schedules this process runs with the same definition ($2
# names, $3 their fingerprints): soonest first, at most $4, locked; rows another runner
# holds are skipped. Served by ``schedules_due``.
CLAIM_DUE = """
select s.name, s.next_tick, s.last_tick
from schedules s
join unnest($2::text[], $3::text[]) as d(name, fingerprint)
  on s.name = d.name and s.fingerprint = d.fingerprint
where not s.paused and s.next_tick <= $1
order by s.next_tick, s.name
limit $4
for update of s skip locked
"""

# A row per schedule that has none; a row whose definition changed gets the new
# fingerprint and next tick (its pause and last tick stay).
SYNC = """
insert into schedules (name, fingerprint, next_tick, updated_at)
select n, f, t, $4 from unnest($1::text[], $2::text[], $3::timestamptz[]) as d(n, f, t)
on conflict (name) do update
set fingerprint = excluded.fingerprint, next_tick = excluded.next_tick,
    updated_at = excluded.updated_at
where schedules.fingerprint <> excluded.fingerprint
"""

ADVANCE = """
update schedules s
set next_tick = a.next_tick, last_tick = coalesce(a.last_tick, s.last_tick), updated_at = $4
from unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) as a(name, next_tick, last_tick)
where s.name = a.name
"""

RECORDED = "select tick_id from schedule_ticks where tick_id = any($1::text[])"

RECORD_TICKS = """
insert into schedule_ticks (schedule, tick_id, tick, manual, fired_at, outcome, instance_id,
                            message_id, business_key, detail, lateness_seconds, request_id)
select * from unnest($1::text[], $2::text[], $3::timestamptz[], $4::bool[],
                     $5::timestamptz[], $6::text[], $7::uuid[], $8::uuid[], $9::text[],
                     $10::text[], $11::float8[], $12::text[])
"""

# Each named schedule's row with its last tick record (the newest, scheduled or manual).
STATES = """
select s.name, s.fingerprint, s.next_tick, s.last_tick, s.paused, s.updated_at,
       t.outcome as last_outcome, t.fired_at as last_fired_at
from schedules s
left join lateral (
  select outcome, fired_at from schedule_ticks
  where schedule = s.name order by id desc limit 1
) t on true
where s.name = any($1::text[])
"""

# The last tick record of schedules that have no row yet (a trigger before any sync).
LAST_TICKS = """
select n.name, t.outcome, t.fired_at
from unnest($1::text[]) as n(name)
join lateral (
  select outcome, fired_at from schedule_ticks
  where schedule = n.name order by id desc limit 1
) t on true
"""

# Pause (idempotent: a paused row keeps its updated_at); a missing row is made paused.
PAUSE = """
insert into schedules (name, fingerprint, next_tick, paused, updated_at)
values ($1, $2, $3, true, $4)
on conflict (name) do update
set paused = true, updated_at = $4
where not schedules.paused
"""

# Resume from now: the next tick after now (ticks missed while paused do not fire).
RESUME = """
insert into schedules (name, fingerprint, next_tick, paused, updated_at)
values ($1, $2, $3, false, $4)
on conflict (name) do update
set paused = false, fingerprint = $2, next_tick = $3, updated_at = $4
where schedules.paused
"""

TICKS_PAGE = """
select id, schedule, tick_id, tick, manual, fired_at, outcome, instance_id, message_id,
       business_key, detail, lateness_seconds, request_id
from schedule_ticks
where schedule = $1 and ($2::int8 is null or id < $2)
order by id desc
limit $3
"""


@dataclass(frozen=True, slots=True)
class DueRow:
    name: str
    next_tick: datetime
    last_tick: datetime | None


@dataclass(frozen=True, slots=True)
class StateRow:
    name: str
    fingerprint: str
    next_tick: datetime
    last_tick: datetime | None
    paused: bool
    updated_at: datetime
    last_outcome: str | None
    last_fired_at: datetime | None


@dataclass(frozen=True, slots=True)
class TickRecord:
    """A ``schedule_ticks`` row (``id`` is None before it is written)."""

    schedule: str
    tick_id: str
    tick: datetime
    manual: bool
    fired_at: datetime
    outcome: str
    instance_id: uuid.UUID | None
    message_id: uuid.UUID | None
    business_key: str | None
    detail: str | None
    lateness_seconds: float
    request_id: str | None
    id: int | None = None


async def claim_due(
    conn: asyncpg.Connection,
    now: datetime,
    fingerprints: Mapping[str, str],
    limit: int,
) -> list[DueRow]:
    """Lock up to ``limit`` due rows of the schedules in ``fingerprints`` (name to the
    fingerprint this process computes), in the caller's transaction."""
    names = list(fingerprints)
    rows = await conn.fetch(CLAIM_DUE, now, names, [fingerprints[n] for n in names], limit)
    return [DueRow(r["name"], r["next_tick"], r["last_tick"]) for r in rows]


async def recorded(conn: asyncpg.Connection, tick_ids: Sequence[str]) -> set[str]:
    """Which of ``tick_ids`` are recorded already."""
    if not tick_ids:
        return set()
    return {r["tick_id"] for r in await conn.fetch(RECORDED, list(tick_ids))}


async def record_ticks(conn: asyncpg.Connection, ticks: Sequence[TickRecord]) -> None:
    """Insert the tick records (a tick id recorded before violates the unique key)."""
    if not ticks:
        return
    columns = (
        "schedule",
        "tick_id",
        "tick",
        "manual",
        "fired_at",
        "outcome",
        "instance_id",
        "message_id",
        "business_key",
        "detail",
        "lateness_seconds",
        "request_id",
    )
    await conn.execute(RECORD_TICKS, *([getattr(t, c) for t in ticks] for c in columns))


async def advance(
    conn: asyncpg.Connection,
    moves: Sequence[tuple[str, datetime, datetime | None]],
    now: datetime,
) -> None:
    """Set each (name, next tick, last tick fired or None to keep it)."""
    if not moves:
        return
    names, nexts, lasts = (list(column) for column in zip(*moves, strict=True))
    await conn.execute(ADVANCE, names, nexts, lasts, now)


async def sync(db: AsyncEngine, rows: Sequence[tuple[str, str, datetime]], now: datetime) -> int:
    """Insert or redefine the rows (name, fingerprint, next tick); how many changed."""
    if not rows:
        return 0
    names, fingerprints, nexts = (list(column) for column in zip(*rows, strict=True))
    async with driver_transaction(db) as conn:
        status: str = await conn.execute(SYNC, names, fingerprints, nexts, now)
    return int(status.split()[-1])


async def states(
    db: AsyncEngine, names: Sequence[str]
) -> tuple[dict[str, StateRow], dict[str, tuple[str, datetime]]]:
    """The rows of ``names`` with their last tick record, by name; and for names without
    a row, their last tick record (outcome, fired at) if they have one."""
    async with driver_connection(db) as conn:
        rows = await conn.fetch(STATES, list(names))
        missing = sorted(set(names) - {r["name"] for r in rows})
        lasts = await conn.fetch(LAST_TICKS, missing) if missing else []
    found = {
        r["name"]: StateRow(
            r["name"],
            r["fingerprint"],
            r["next_tick"],
            r["last_tick"],
            r["paused"],
            r["updated_at"],
            r["last_outcome"],
            r["last_fired_at"],
        )
        for r in rows
    }
    return found, {r["name"]: (r["outcome"], r["fired_at"]) for r in lasts}


async def pause(
    db: AsyncEngine, name: str, fingerprint: str, next_tick: datetime, now: datetime
) -> None:
    async with driver_transaction(db) as conn:
        await conn.execute(PAUSE, name, fingerprint, next_tick, now)


async def resume(
    db: AsyncEngine, name: str, fingerprint: str, next_tick: datetime, now: datetime
) -> None:
    async with driver_transaction(db) as conn:
        await conn.execute(RESUME, name, fingerprint, next_tick, now)


async def ticks_page(
    db: AsyncEngine, schedule: str, limit: int, before: int | None
) -> list[TickRecord]:
    """Up to ``limit`` tick records of ``schedule`` older than id ``before``, newest first."""
    async with driver_connection(db) as conn:
        rows = await conn.fetch(TICKS_PAGE, schedule, before, limit)
    return [
        TickRecord(
            r["schedule"],
            r["tick_id"],
            r["tick"],
            r["manual"],
            r["fired_at"],
            r["outcome"],
            r["instance_id"],
            r["message_id"],
            r["business_key"],
            r["detail"],
            r["lateness_seconds"],
            r["request_id"],
            r["id"],
        )
        for r in rows
    ]


__all__ = [
    "DueRow",
    "StateRow",
    "TickRecord",
    "advance",
    "claim_due",
    "pause",
    "record_ticks",
    "recorded",
    "resume",
    "states",
    "sync",
    "ticks_page",
]
