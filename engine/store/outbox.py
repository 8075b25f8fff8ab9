"""The outbox as the relay and the metrics see it: claiming, marking, leading, counting.

Rows are written by the runtime's transactions (``engine.store.writeset``); the relay
(``engine.messaging.relay``) publishes them to Kafka. Its statements run on asyncpg
directly and are prepared once per connection, as before: the relay's hot path is
:data:`CLAIM_UNPUBLISHED` then :data:`MARK_PUBLISHED` in one transaction.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.store.database import driver_connection

# The oldest unpublished rows ($1 at most), locked for this relay's transaction; rows
# another transaction holds are skipped, not waited for. Served by ``outbox_pending``.
CLAIM_UNPUBLISHED = """
select id, topic, key, headers, value from outbox
where published_at is null
order by id
limit $1
for update skip locked
"""

# $1: when; $2: the ids published.
MARK_PUBLISHED = "update outbox set published_at = $1 where id = any($2::int8[])"

# One leader per schema ($1): the advisory lock key is derived from the schema name. Run on
# the relay's own session (its listener), which holds the lock while it lives.
TRY_LEAD = "select pg_try_advisory_lock(hashtextextended('conveyor.outbox_relay/' || $1, 0))"

BACKLOG = "select count(*) from outbox where published_at is null"


async def backlog(db: AsyncEngine) -> int:
    """How many outbox messages are not yet published (all relays together)."""
    async with driver_connection(db) as conn:
        count: int = await conn.fetchval(BACKLOG)
    return count


__all__ = ["BACKLOG", "CLAIM_UNPUBLISHED", "MARK_PUBLISHED", "TRY_LEAD", "backlog"]
