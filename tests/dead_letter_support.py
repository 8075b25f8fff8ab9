"""Making dead letters for tests: the messages the worker would have dead-lettered, stored
as the worker stores them (``engine.store.dead_letters.record``)."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from engine.messaging.deadletter import DeadLetter
from engine.messaging.routing import DeadLetterReason
from engine.store import dead_letters as store
from engine.store.dead_letters import DeadLetterFilter, DeadLetterRecord
from engine.wire.cloudevents import CloudEvent, encode_structured

_offsets = itertools.count(1)


def cloud_event(event_id: str, type_: str, key: str, data: Any) -> CloudEvent:
    return CloudEvent(id=event_id, source="test/shop", type=type_, subject=key, data=data)


def dead_letter(
    topic: str,
    event: CloudEvent | None,
    reason: DeadLetterReason,
    *,
    value: bytes | None = None,
    key: bytes | None = None,
    headers: tuple[tuple[str, bytes], ...] | None = None,
    workflow: str | None = "order",
    detail: str = "refused",
    partition: int = 0,
) -> DeadLetter:
    """A dead letter of ``event`` (structured mode) or of the raw ``value``."""
    if event is not None:
        raw, encoded = encode_structured(event)
        value = raw if value is None else value
        headers = tuple(encoded) if headers is None else headers
    return DeadLetter(
        topic,
        partition,
        next(_offsets),
        key if key is not None else (event.subject.encode() if event and event.subject else None),
        value,
        headers or (),
        reason,
        detail,
        event.id if event else None,
        event.type if event else None,
        workflow if event else None,
        event.subject if event else None,
    )


async def stored(db: AsyncEngine, letter: DeadLetter) -> DeadLetterRecord:
    """Record ``letter`` as the worker does and read it back."""
    await store.record(db, [letter])
    page = await store.list_page(db, DeadLetterFilter(topic=letter.topic), limit=500)
    (found,) = [r for r in page.items if r.offset == letter.offset]
    return found
