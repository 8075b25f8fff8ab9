"""The SQL of workflow migrations: the instances a migration selects, their history for
replay, their timers, and the version change itself."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from engine.model import Instance
from engine.replay import REPLAYED, Step
from engine.store import statements as sql
from engine.store.queries import instance_from_row

LOAD_STEPS = """
select instance_id, revision, event_id, event_type, source, outcome, from_state, to_state,
       payload, occurred_at
from history
where instance_id = any($1::uuid[]) and outcome = any($2::text[])
order by instance_id, id
"""


async def steps(
    conn: asyncpg.Connection, instance_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Step]]:
    """The accepted history of each instance (what replay reads), in order."""
    found: dict[uuid.UUID, list[Step]] = {i: [] for i in instance_ids}
    if not instance_ids:
        return found
    rows = await conn.fetch(LOAD_STEPS, list(instance_ids), sorted(REPLAYED))
    for r in rows:
        payload = r["payload"]
        if isinstance(payload, str):
            payload = orjson.loads(payload)
        found[r["instance_id"]].append(
            Step(
                revision=r["revision"],
                event_id=r["event_id"],
                event_type=r["event_type"],
                source=r["source"],
                outcome=r["outcome"],
                from_state=r["from_state"],
                to_state=r["to_state"],
                payload=payload if isinstance(payload, dict) else {},
                occurred_at=r["occurred_at"],
            )
        )
    return found


async def page(
    conn: asyncpg.Connection,
    where: str,
    args: Sequence[Any],
    *,
    after: uuid.UUID | None,
    limit: int,
) -> list[Instance]:
    """Instances matching ``where`` (placeholders ``$1..$n`` over ``args``) in id order,
    after ``after``: a dry run walks the selection a page at a time."""
    n = len(args)
    rows = await conn.fetch(
        f"select {sql.INSTANCE_COLUMNS} from instances where ({where})"
        f" and (${n + 1}::uuid is null or id > ${n + 1}) order by id limit ${n + 2}",
        *args,
        after,
        limit,
    )
    return [instance_from_row(r) for r in rows]


async def count(conn: asyncpg.Connection, where: str, args: Sequence[Any]) -> int:
    return int(await conn.fetchval(f"select count(*) from instances where {where}", *args))


async def pending_timers(
    conn: asyncpg.Connection, instance_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, datetime]]:
    """The workflow timers (not Conveyor's own ``conveyor.*``) pending per instance."""
    rows = await conn.fetch(
        "select instance_id, name, due_at from timers"
        " where instance_id = any($1::uuid[]) and name not like 'conveyor.%'",
        list(instance_ids),
    )
    found: dict[uuid.UUID, dict[str, datetime]] = {}
    for r in rows:
        found.setdefault(r["instance_id"], {})[r["name"]] = r["due_at"]
    return found


async def change_version(
    conn: asyncpg.Connection, instance_ids: Sequence[uuid.UUID], version: int
) -> None:
    """Put the instances on ``version`` and drop their workflow timers (the caller sets
    the new state's); Conveyor's own timers (a pending retry) stay."""
    ids = list(instance_ids)
    await conn.execute("update instances set version = $2 where id = any($1::uuid[])", ids, version)
    await conn.execute(
        "delete from timers where instance_id = any($1::uuid[]) and name not like 'conveyor.%'",
        ids,
    )


__all__ = ["change_version", "count", "page", "pending_timers", "steps"]
