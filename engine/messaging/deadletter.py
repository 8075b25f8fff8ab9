"""Dead letters: messages the worker cannot apply, kept byte for byte with the reason.

A dead letter is the original value, key and headers, published to ``{prefix}.deadletter``
with four headers added: ``conveyor-dlq-reason`` (one of
:data:`~engine.messaging.routing.DeadLetterReason`), ``conveyor-dlq-topic``,
``conveyor-dlq-partition`` and ``conveyor-dlq-offset`` (where it came from), plus
``conveyor-dlq-detail``, a human-readable explanation. Replaying one is producing its
value, key and original headers back to ``conveyor-dlq-topic``, or asking Conveyor to
(``conveyor deadletters replay``, ``POST /v1/dead-letters/{id}/replay``): the worker
also records every dead letter in PostgreSQL (:mod:`engine.store.dead_letters`) before
it publishes it, with what the message was about where routing could tell
(:func:`subject_of`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from engine.messaging.routing import DeadLetterReason, Routed, StartCommand, Unroutable
from engine.wire.cloudevents import CloudEvent, InvalidMessage, decode

REASON = "conveyor-dlq-reason"
TOPIC = "conveyor-dlq-topic"
PARTITION = "conveyor-dlq-partition"
OFFSET = "conveyor-dlq-offset"
DETAIL = "conveyor-dlq-detail"
DLQ_HEADERS = frozenset({REASON, TOPIC, PARTITION, OFFSET, DETAIL})
MAX_DETAIL = 1000


@dataclass(frozen=True, slots=True)
class Subject:
    """What a dead message was about, as far as decoding and routing could tell."""

    event_id: str | None = None  # the CloudEvent id
    event_type: str | None = None
    workflow: str | None = None
    business_key: str | None = None
    instance_id: uuid.UUID | None = None  # when the event named its instance


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message to dead-letter, and why (and what it was about, where known)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    reason: DeadLetterReason
    detail: str
    event_id: str | None = None
    event_type: str | None = None
    workflow: str | None = None
    business_key: str | None = None
    instance_id: uuid.UUID | None = None

    @classmethod
    def of(
        cls,
        record: Any,
        reason: DeadLetterReason,
        detail: str,
        subject: Subject | None = None,
    ) -> DeadLetter:
        """From an aiokafka ``ConsumerRecord``."""
        about = subject or Subject()
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            tuple(record.headers or ()),
            reason,
            detail,
            about.event_id,
            about.event_type,
            about.workflow,
            about.business_key,
            about.instance_id,
        )

    def headers_out(self) -> list[tuple[str, bytes]]:
        """The original headers (minus earlier dead-letter headers) plus ours."""
        kept = [(k, v) for k, v in self.headers if k not in DLQ_HEADERS]
        return [
            *kept,
            (REASON, self.reason.encode()),
            (TOPIC, self.topic.encode()),
            (PARTITION, str(self.partition).encode()),
            (OFFSET, str(self.offset).encode()),
            (DETAIL, self.detail[:MAX_DETAIL].encode("utf-8", "replace")),
        ]


def subject_of(record: Any, routed: Routed | Unroutable) -> Subject:
    """What the message of ``record`` was about: its CloudEvent's id and type, and the
    workflow, business key or instance of its first delivery (the one whose verdict names
    the dead letter's reason). A message routing refused is decoded again for its id and
    type (pure, and only for dead letters); one that is no CloudEvent tells nothing."""
    if isinstance(routed, Routed):
        event = routed.event
        first = routed.deliveries[0] if routed.deliveries else None
        if isinstance(first, StartCommand):
            return Subject(event.id, event.type, first.workflow, first.business_key)
        if first is not None:
            return Subject(
                event.id, event.type, first.workflow, first.business_key, first.instance_id
            )
        return Subject(event.id, event.type)
    try:
        decoded: CloudEvent = decode(record.value, record.headers or ())
    except InvalidMessage:
        return Subject()
    return Subject(decoded.id, decoded.type, business_key=decoded.subject or _key_text(record.key))


def _key_text(key: bytes | None) -> str | None:
    try:
        return key.decode("utf-8") if key else None
    except UnicodeDecodeError:
        return None


async def publish(producer: AIOKafkaProducer, topic: str, letters: Sequence[DeadLetter]) -> None:
    """Publish dead letters and wait until the broker has every one (acks=all)."""
    futures = [
        await producer.send(topic, value=d.value, key=d.key, headers=d.headers_out())
        for d in letters
    ]
    for future in futures:
        await future
