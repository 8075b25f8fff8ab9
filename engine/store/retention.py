"""Retention: bounded growth of the inbox, the outbox, stored HTTP responses, schedule
ticks and (when configured) the history of ended instances.

The inbox must remember an event id for longer than the event can be delivered again
(longer than the Kafka topics' retention): an id forgotten sooner could be applied twice.
Published outbox rows are kept a while for inspection, then deleted. With a history
retention, completed and cancelled instances lose their history rows once they ended
longer ago than that; their instance rows stay (final state and data, and the business
key and idempotency key they hold, so a late start still finds them). Failed instances
keep their history (an operator may retry them), active ones too. Deletes run in small
batches so that they never hold long locks on the hot tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.clock import utc_now
from engine.observability import get_logger
from engine.store.database import driver_transaction

log = get_logger("conveyor.retention")

# By primary key: an event id alone may name rows of several instances (the inbox is
# keyed by instance and event id), some of them still within retention.
PRUNE_INBOX = """
delete from inbox where (instance_id, event_id) in (
  select instance_id, event_id from inbox where processed_at < $1 limit $2
)
"""

# Stored HTTP responses for Idempotency-Key live as long as processed event ids (by
# primary key: the same key and endpoint may belong to several API keys).
PRUNE_IDEMPOTENT_RESPONSES = """
delete from idempotent_responses where (api_key_id, key, endpoint) in (
  select api_key_id, key, endpoint from idempotent_responses where created_at < $1 limit $2
)
"""

PRUNE_OUTBOX = """
delete from outbox where id in (
  select id from outbox where published_at < $1 order by id limit $2
)
"""

# Schedule ticks recorded before $1, except each schedule's newest (its last outcome):
# oldest first, along the primary key.
PRUNE_SCHEDULE_TICKS = """
delete from schedule_ticks where id in (
  select t.id from schedule_ticks t
  where t.fired_at < $1
    and t.id < (select max(n.id) from schedule_ticks n where n.schedule = t.schedule)
  order by t.id
  limit $2
)
"""

# The history of instances that ended (completed or cancelled: they never change again,
# so updated_at is when they ended) before $1. A keyset walk over the partial index
# instances_ended (migration 0004) in (updated_at, id) order: one page of $4 instances
# after the cursor ($2, $3), of whose history at most $5 rows are deleted. The caller
# repeats a page until it deletes fewer rows than that, then moves the cursor to the
# page's last instance. Rows an ended instance gains later (late events it refuses) go in
# a later run, which walks every ended instance again.
PRUNE_HISTORY = """
with page as (
  select id, updated_at from instances
  where status in ('completed', 'cancelled') and updated_at < $1
    and (updated_at, id) > ($2::timestamptz, $3::uuid)
  order by updated_at, id
  limit $4
),
gone as (
  -- Never a scan of the whole history, however small the planner thinks it is: rows
  -- found by instance (a lateral subquery with a limit is not flattened into a join),
  -- deleted by primary key ("= any(array(...))", not a semi-join).
  delete from history where id = any(array(
    select h.id
    from page cross join lateral (
      select id from history where instance_id = page.id limit $5
    ) as h
    limit $5
  ))
  returning 1
)
select (select count(*) from gone) as deleted,
       (select count(*) from page) as instances,
       (select updated_at from page order by updated_at desc, id desc limit 1) as last_updated,
       (select id from page order by updated_at desc, id desc limit 1) as last_id
"""

HISTORY_PAGE = 1000
"""Ended instances per page of the history walk (each statement of it touches at most
``batch`` history rows of one page)."""

_WALK_START = (datetime(1, 1, 1, tzinfo=UTC), uuid.UUID(int=0))


@dataclass(frozen=True, slots=True)
class Pruned:
    inbox: int
    outbox: int
    idempotent_responses: int = 0
    history: int = 0
    schedule_ticks: int = 0


async def prune(
    db: AsyncEngine,
    *,
    now: datetime,
    inbox_retention: timedelta,
    outbox_retention: timedelta,
    history_retention: timedelta | None = None,
    batch: int = 5000,
    history_page: int = HISTORY_PAGE,
) -> Pruned:
    """Delete inbox rows and published outbox rows older than their retention, schedule
    ticks as old as processed event ids (each schedule keeps its newest), and, with a
    ``history_retention``, the history of instances that ended longer ago than that."""
    totals = {"inbox": 0, "outbox": 0, "idempotent_responses": 0, "schedule_ticks": 0}
    for name, statement, cutoff in (
        ("inbox", PRUNE_INBOX, now - inbox_retention),
        ("idempotent_responses", PRUNE_IDEMPOTENT_RESPONSES, now - inbox_retention),
        ("outbox", PRUNE_OUTBOX, now - outbox_retention),
        ("schedule_ticks", PRUNE_SCHEDULE_TICKS, now - inbox_retention),
    ):
        while True:
            async with driver_transaction(db) as conn:
                status = await conn.execute(statement, cutoff, batch)
            deleted = int(status.split()[-1])
            totals[name] += deleted
            if deleted < batch:
                break
    if history_retention is not None:
        totals["history"] = await prune_history(
            db, cutoff=now - history_retention, batch=batch, page=history_page
        )
    return Pruned(**totals)


async def prune_history(db: AsyncEngine, *, cutoff: datetime, batch: int, page: int) -> int:
    """Delete the history rows of completed and cancelled instances that ended before
    ``cutoff``, at most ``batch`` rows per statement (one short transaction each); keep
    the instance rows. Returns the number of rows deleted."""
    total = 0
    after_updated, after_id = _WALK_START
    while True:
        async with driver_transaction(db) as conn:
            row = await conn.fetchrow(PRUNE_HISTORY, cutoff, after_updated, after_id, page, batch)
        assert row is not None  # an aggregate query always answers one row
        deleted: int = row["deleted"]
        total += deleted
        if deleted >= batch:
            continue  # this page may have more: the same page again
        if row["instances"] < page:
            return total
        after_updated, after_id = row["last_updated"], row["last_id"]


async def run_retention(
    db: AsyncEngine,
    stop: asyncio.Event,
    *,
    inbox_retention: timedelta,
    outbox_retention: timedelta,
    history_retention: timedelta | None = None,
    interval: float = 3600.0,
) -> None:
    """Prune every ``interval`` seconds until ``stop`` is set (a worker service)."""
    while not stop.is_set():
        try:
            pruned = await prune(
                db,
                now=utc_now(),
                inbox_retention=inbox_retention,
                outbox_retention=outbox_retention,
                history_retention=history_retention,
            )
            if any(
                (
                    pruned.inbox,
                    pruned.outbox,
                    pruned.idempotent_responses,
                    pruned.history,
                    pruned.schedule_ticks,
                )
            ):
                log.info(
                    "pruned",
                    inbox=pruned.inbox,
                    outbox=pruned.outbox,
                    idempotent_responses=pruned.idempotent_responses,
                    history=pruned.history,
                    schedule_ticks=pruned.schedule_ticks,
                )
        except Exception:  # retention is housekeeping: log and try again next round
            log.exception("retention round failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
