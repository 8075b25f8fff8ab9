"""Events parked behind a retrying instance's failed step (see :mod:`engine.retries`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

# In the order given (the order they arrived); a redelivered event is parked once.
PARK_EVENTS = """
insert into parked_events (instance_id, event_id, event_type, payload, source, request_id,
                           parked_at)
select p.instance_id, p.event_id, p.event_type, p.payload, p.source, p.request_id, $2
from rows from (jsonb_to_recordset($1::jsonb)
       as (instance_id uuid, event_id text, event_type text, payload jsonb, source text,
           request_id text)) with ordinality
     as p(instance_id, event_id, event_type, payload, source, request_id, ord)
order by p.ord
on conflict (instance_id, event_id) do nothing
"""

PARKED = """
select event_id, event_type, payload, source, request_id from parked_events
where instance_id = $1 order by id
"""

UNPARK = "delete from parked_events where instance_id = $1 and event_id = any($2::text[])"

# On cancel: what was parked goes; the rows not yet processed come back to be refused.
DROP_PARKED = """
with dropped as (
  delete from parked_events where instance_id = $1
  returning id, instance_id, event_id, event_type, payload, source, request_id
)
select d.id, d.event_id, d.event_type, d.payload, d.source, d.request_id from dropped d
where not exists (select 1 from inbox i
                  where i.instance_id = d.instance_id and i.event_id = d.event_id)
order by d.id
"""

PARKED_PAIRS = """
select instance_id, event_id from parked_events where instance_id = any($1::uuid[])
"""


async def park(conn: asyncpg.Connection, rows: Sequence[Mapping[str, Any]], now: datetime) -> None:
    """Park these events (rows of ``parked_events``, in arrival order)."""
    if rows:
        await conn.execute(PARK_EVENTS, orjson.dumps(list(rows)).decode(), now)


async def parked(conn: asyncpg.Connection, instance_id: uuid.UUID) -> list[asyncpg.Record]:
    """The instance's parked events, oldest first."""
    return list(await conn.fetch(PARKED, instance_id))


async def unpark(
    conn: asyncpg.Connection, instance_id: uuid.UUID, event_ids: Sequence[str]
) -> None:
    if event_ids:
        await conn.execute(UNPARK, instance_id, list(event_ids))


async def drop_parked(conn: asyncpg.Connection, instance_id: uuid.UUID) -> list[asyncpg.Record]:
    """Remove everything parked for the instance; return those not processed yet."""
    return list(await conn.fetch(DROP_PARKED, instance_id))


async def parked_pairs(
    conn: asyncpg.Connection, instance_ids: Sequence[uuid.UUID]
) -> frozenset[tuple[uuid.UUID, str]]:
    """The (instance, event id) pairs parked for these instances."""
    if not instance_ids:
        return frozenset()
    rows = await conn.fetch(PARKED_PAIRS, list(instance_ids))
    return frozenset((r["instance_id"], r["event_id"]) for r in rows)
