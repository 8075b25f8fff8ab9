"""The messages one instance published: its outbox rows, for the console's instance page.

Published rows are kept for the outbox retention (``engine.store.retention``), so this
shows the recent ones and those still waiting for the relay.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.store.database import driver_connection

# Newest first, read backwards along the index outbox_instance (migration 0009).
INSTANCE_MESSAGES = """
select message_id, topic, value, created_at, published_at from outbox
where instance_id = $1
order by id desc
limit $2
"""


@dataclass(frozen=True, slots=True)
class InstanceMessage:
    message_id: uuid.UUID
    topic: str
    type: str | None
    """The CloudEvent's ``type`` (None when the value is not a JSON object with one)."""
    created_at: datetime
    published_at: datetime | None


async def recent(
    db: AsyncEngine, instance_id: uuid.UUID, *, limit: int = 50
) -> list[InstanceMessage]:
    """Up to ``limit`` of the instance's outbox messages, newest first."""
    async with driver_connection(db) as conn:
        rows = await conn.fetch(INSTANCE_MESSAGES, instance_id, limit)
    return [
        InstanceMessage(
            r["message_id"], r["topic"], _type(r["value"]), r["created_at"], r["published_at"]
        )
        for r in rows
    ]


def _type(value: bytes) -> str | None:
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    kind = event.get("type") if isinstance(event, dict) else None
    return kind if isinstance(kind, str) else None


__all__ = ["INSTANCE_MESSAGES", "InstanceMessage", "recent"]
