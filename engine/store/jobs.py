"""Durable jobs (``jobs``, ``job_items``): the SQL behind bulk actions.

A job's target set is fixed when it is created: one statement copies the ids of the
matching instances into ``job_items`` (each batch checks again which of its instances
still match, :func:`matching`). Runners then claim pending items a batch at a time
(``FOR UPDATE SKIP LOCKED``, so several share a job), and settle each batch's items and
the job's counters in the transaction that applied the batch: a crash loses only an
uncommitted batch, whose items are still pending and are done again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.model import Instance
from engine.store import statements as sql
from engine.store.database import driver_connection
from engine.store.queries import instance_from_row

JobStatus = Literal["running", "completed", "failed", "cancelled"]
ItemStatus = Literal["pending", "succeeded", "skipped", "failed"]

JOB_COLUMNS = (
    "id, kind, action, spec, status, total, succeeded, skipped, failed, request_id,"
    " created_at, updated_at, finished_at, error"
)


@dataclass(frozen=True, slots=True)
class Job:
    """A job row: what it does (``spec``) and how far it got."""

    id: uuid.UUID
    kind: str
    action: str
    spec: dict[str, Any]
    status: JobStatus
    total: int
    succeeded: int
    skipped: int
    failed: int
    request_id: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: dict[str, Any] | None

    @property
    def done(self) -> int:
        return self.succeeded + self.skipped + self.failed


@dataclass(frozen=True, slots=True)
class JobItem:
    instance_id: uuid.UUID
    status: ItemStatus
    reason: str | None
    done_at: datetime | None


@dataclass(frozen=True, slots=True)
class Settled:
    """What became of one claimed item."""

    instance_id: uuid.UUID
    status: Literal["succeeded", "skipped", "failed"]
    reason: str | None = None


def _job(row: asyncpg.Record) -> Job:
    return Job(**dict(row))


INSERT_JOB = f"""
insert into jobs (id, kind, action, spec, request_id, created_at, updated_at)
values ($1, $2, $3, $4::jsonb, $5, $6, $6)
on conflict (id) do nothing
returning {JOB_COLUMNS}
"""


async def create(
    conn: asyncpg.Connection,
    *,
    job_id: uuid.UUID,
    kind: str,
    action: str,
    spec: dict[str, Any],
    request_id: str | None,
    where: str,
    args: Sequence[Any],
    cap: int,
    now: datetime,
) -> tuple[Job, bool]:
    """Insert the job and its items (the instances matching ``where``, a condition over
    ``instances`` whose placeholders are ``$1..$n`` over ``args``), in the caller's
    transaction. Returns (job, created): an existing job with the same id is returned as it
    is. Raises :class:`TooManyItems` when more than ``cap`` instances match (the caller's
    transaction then rolls back)."""
    row = await conn.fetchrow(
        INSERT_JOB, job_id, kind, action, orjson.dumps(spec).decode(), request_id, now
    )
    if row is None:
        existing = await conn.fetchrow(f"select {JOB_COLUMNS} from jobs where id = $1", job_id)
        return _job(existing), False
    n = len(args)
    inserted = await conn.fetchval(
        f"with added as (insert into job_items (job_id, instance_id)"
        f" select ${n + 1}::uuid, id from instances where {where} limit ${n + 2}"
        f" returning 1) select count(*) from added",
        *args,
        job_id,
        cap + 1,
    )
    if inserted > cap:
        raise TooManyItems(cap)
    row = await conn.fetchrow(
        f"update jobs set total = $2 where id = $1 returning {JOB_COLUMNS}", job_id, inserted
    )
    return _job(row), True


class TooManyItems(Exception):
    """More instances match than one job may hold."""

    def __init__(self, cap: int) -> None:
        super().__init__(cap)
        self.cap = cap


async def preview(
    db: AsyncEngine, where: str, args: Sequence[Any], *, sample: int
) -> tuple[int, list[Instance]]:
    """How many instances match ``where``, and the oldest ``sample`` of them."""
    n = len(args)
    async with driver_connection(db) as conn:
        count = await conn.fetchval(f"select count(*) from instances where {where}", *args)
        rows = await conn.fetch(
            f"select {sql.INSTANCE_COLUMNS} from instances where {where}"
            f" order by created_at, id limit ${n + 1}",
            *args,
            sample,
        )
    return int(count), [instance_from_row(r) for r in rows]


async def get(db: AsyncEngine, job_id: uuid.UUID) -> Job | None:
    async with driver_connection(db) as conn:
        row = await conn.fetchrow(f"select {JOB_COLUMNS} from jobs where id = $1", job_id)
    return None if row is None else _job(row)


async def items(
    db: AsyncEngine,
    job_id: uuid.UUID,
    *,
    status: ItemStatus | None,
    after: uuid.UUID | None,
    limit: int,
) -> list[JobItem]:
    """A job's items in instance id order (of one status, if given), after ``after``."""
    async with driver_connection(db) as conn:
        rows = await conn.fetch(
            "select instance_id, status, reason, done_at from job_items"
            " where job_id = $1 and ($2::text is null or status = $2)"
            " and ($3::uuid is null or instance_id > $3)"
            " order by instance_id limit $4",
            job_id,
            status,
            after,
            limit,
        )
    return [JobItem(**dict(r)) for r in rows]


async def running(db: AsyncEngine, kind: str, *, limit: int) -> list[uuid.UUID]:
    """Running jobs of ``kind``, oldest first (served by the ``jobs_running`` index)."""
    async with driver_connection(db) as conn:
        rows = await conn.fetch(
            "select id from jobs where status = 'running' and kind = $1"
            " order by created_at limit $2",
            kind,
            limit,
        )
    return [r["id"] for r in rows]


async def matching(
    conn: asyncpg.Connection, where: str, args: Sequence[Any], ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of ``ids`` match ``where`` (as in :func:`create`), in the caller's
    transaction (which has locked them: the answer holds until it commits)."""
    if not ids:
        return set()
    rows = await conn.fetch(
        f"select id from instances where ({where}) and id = any(${len(args) + 1}::uuid[])",
        *args,
        list(ids),
    )
    return {r["id"] for r in rows}


# A job's pending items are claimed by one runner at a time; items another runner holds
# are skipped (it settles them), and a job no longer running hands out nothing.
CLAIM = """
select instance_id from job_items
where job_id = $1 and status = 'pending'
  and exists (select 1 from jobs where id = $1 and status = 'running')
order by instance_id
limit $2
for update skip locked
"""


async def claim(conn: asyncpg.Connection, job_id: uuid.UUID, limit: int) -> list[uuid.UUID]:
    """Lock up to ``limit`` pending items of the job, in the caller's transaction."""
    rows = await conn.fetch(CLAIM, job_id, limit)
    return [r["instance_id"] for r in rows]


# The items become settled and the job's counters grow by as many as changed, in one
# statement (the job row is locked last, briefly, so that runners sharing a job queue on
# it only at their commit).
SETTLE = """
with settled as (
  update job_items j set status = s.status, reason = s.reason, done_at = $5
  from unnest($2::uuid[], $3::text[], $4::text[]) as s(instance_id, status, reason)
  where j.job_id = $1 and j.instance_id = s.instance_id and j.status = 'pending'
  returning j.status
)
update jobs set
  succeeded = succeeded + (select count(*) from settled where status = 'succeeded'),
  skipped = skipped + (select count(*) from settled where status = 'skipped'),
  failed = failed + (select count(*) from settled where status = 'failed'),
  updated_at = $5
where id = $1
"""


async def settle(
    conn: asyncpg.Connection, job_id: uuid.UUID, settled: Sequence[Settled], now: datetime
) -> None:
    """Record what became of claimed items (pending ones only) and count them."""
    if not settled:
        return
    await conn.execute(
        SETTLE,
        job_id,
        [s.instance_id for s in settled],
        [s.status for s in settled],
        [s.reason for s in settled],
        now,
    )


async def complete_if_done(conn: asyncpg.Connection, job_id: uuid.UUID, now: datetime) -> bool:
    """Mark the running job completed when no item is pending (items another runner is
    settling still count as pending: that runner completes it). True if it did."""
    done = await conn.fetchval(
        "update jobs set status = 'completed', finished_at = $2, updated_at = $2"
        " where id = $1 and status = 'running'"
        " and not exists (select 1 from job_items where job_id = $1 and status = 'pending')"
        " returning true",
        job_id,
        now,
    )
    return bool(done)


async def fail(
    conn: asyncpg.Connection, job_id: uuid.UUID, error: dict[str, Any], now: datetime
) -> None:
    """Mark a running job failed with ``error``; its pending items stay pending."""
    await conn.execute(
        "update jobs set status = 'failed', error = $2::jsonb, finished_at = $3, updated_at = $3"
        " where id = $1 and status = 'running'",
        job_id,
        orjson.dumps(error).decode(),
        now,
    )


async def cancel(conn: asyncpg.Connection, job_id: uuid.UUID, now: datetime, reason: str) -> Job:
    """Stop a running job: its pending items become skipped with ``reason`` (waiting for a
    batch that holds some to commit first) and the job ``cancelled``. A job that has
    finished is left as it is. Items first, then the job row: the order runners lock in."""
    status = await conn.fetchval("select status from jobs where id = $1", job_id)
    if status == "running":
        await conn.execute(
            "update job_items set status = 'skipped', reason = $2, done_at = $3"
            " where job_id = $1 and status = 'pending'",
            job_id,
            reason,
            now,
        )
        await conn.execute(
            "update jobs set status = 'cancelled', finished_at = $2, updated_at = $2,"
            " skipped = total - succeeded - failed"
            " where id = $1 and status = 'running'",
            job_id,
            now,
        )
    row = await conn.fetchrow(f"select {JOB_COLUMNS} from jobs where id = $1", job_id)
    return _job(row)


__all__ = [
    "ItemStatus",
    "Job",
    "JobItem",
    "JobStatus",
    "Settled",
    "TooManyItems",
    "cancel",
    "claim",
    "complete_if_done",
    "create",
    "fail",
    "get",
    "items",
    "matching",
    "preview",
    "running",
    "settle",
]
