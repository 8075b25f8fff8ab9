"""Retention: bounded growth of the inbox, the outbox and stored HTTP responses.

The inbox must remember an event id for longer than the event can be delivered again
(longer than the Kafka topics' retention): an id forgotten sooner could be applied twice.
Published outbox rows are kept a while for inspection, then deleted. Deletes run in small
batches so that they never hold long locks on the hot tables.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.observability import get_logger
from engine.store.database import driver_transaction

log = get_logger("conveyor.retention")

PRUNE_INBOX = """
delete from inbox where event_id in (
  select event_id from inbox where processed_at < $1 limit $2
)
"""

# Stored HTTP responses for Idempotency-Key live as long as processed event ids.
PRUNE_IDEMPOTENT_RESPONSES = """
delete from idempotent_responses where (key, endpoint) in (
  select key, endpoint from idempotent_responses where created_at < $1 limit $2
)
"""

PRUNE_OUTBOX = """
delete from outbox where id in (
  select id from outbox where published_at < $1 order by id limit $2
)
"""


@dataclass(frozen=True, slots=True)
class Pruned:
    inbox: int
    outbox: int
    idempotent_responses: int = 0


async def prune(
    engine: AsyncEngine,
    *,
    now: datetime,
    inbox_retention: timedelta,
    outbox_retention: timedelta,
    batch: int = 5000,
) -> Pruned:
    """Delete inbox rows and published outbox rows older than their retention."""
    totals = {"inbox": 0, "outbox": 0, "idempotent_responses": 0}
    for name, statement, cutoff in (
        ("inbox", PRUNE_INBOX, now - inbox_retention),
        ("idempotent_responses", PRUNE_IDEMPOTENT_RESPONSES, now - inbox_retention),
        ("outbox", PRUNE_OUTBOX, now - outbox_retention),
    ):
        while True:
            async with driver_transaction(engine) as conn:
                status = await conn.execute(statement, cutoff, batch)
            deleted = int(status.split()[-1])
            totals[name] += deleted
            if deleted < batch:
                break
    return Pruned(**totals)


async def run_retention(
    engine: AsyncEngine,
    stop: asyncio.Event,
    *,
    inbox_retention: timedelta,
    outbox_retention: timedelta,
    interval: float = 3600.0,
) -> None:
    """Prune every ``interval`` seconds until ``stop`` is set (a worker service)."""
    from engine.runtime import utc_now

    while not stop.is_set():
        try:
            pruned = await prune(
                engine,
                now=utc_now(),
                inbox_retention=inbox_retention,
                outbox_retention=outbox_retention,
            )
            if pruned.inbox or pruned.outbox or pruned.idempotent_responses:
                log.info(
                    "pruned",
                    inbox=pruned.inbox,
                    outbox=pruned.outbox,
                    idempotent_responses=pruned.idempotent_responses,
                )
        except Exception:  # retention is housekeeping: log and try again next round
            log.exception("retention round failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
