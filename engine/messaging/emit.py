"""Publish one CloudEvent to a worker topic: ``conveyor emit`` for demos and operators."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.messaging.clients import create_producer
from engine.settings import Settings
from engine.wire.cloudevents import CloudEvent, encode_binary, encode_structured
from engine.wire.topics import Topics

DEFAULT_SOURCE = "conveyor/cli"


@dataclass(frozen=True, slots=True)
class Emitted:
    id: str
    topic: str
    partition: int
    offset: int


async def emit(
    settings: Settings,
    event_type: str,
    *,
    key: str,
    data: Mapping[str, Any],
    topic: str | None = None,
    binary: bool = False,
    event_id: str | None = None,
    source: str = DEFAULT_SOURCE,
) -> Emitted:
    """Publish ``event_type`` for business key ``key`` (subject and message key) and wait
    for the broker's acknowledgement. The topic defaults to the shared ``{prefix}.in``."""
    event = CloudEvent(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=event_type,
        subject=key,
        time=datetime.now(UTC).isoformat(),
        data=dict(data),
    )
    value, headers = (encode_binary if binary else encode_structured)(event)
    target = topic or Topics(settings.topic_prefix).shared
    producer = create_producer(settings, client_id="conveyor-emit")
    await producer.start()
    try:
        meta = await producer.send_and_wait(target, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()
    return Emitted(event.id, meta.topic, meta.partition, meta.offset)
