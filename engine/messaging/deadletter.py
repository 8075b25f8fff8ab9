"""Dead letters: messages the worker cannot apply, kept byte for byte with the reason.

A dead letter is the original value, key and headers, published to ``{prefix}.deadletter``
with four headers added: ``conveyor-dlq-reason`` (one of
:data:`~engine.messaging.routing.DeadLetterReason`), ``conveyor-dlq-topic``,
``conveyor-dlq-partition`` and ``conveyor-dlq-offset`` (where it came from), plus
``conveyor-dlq-detail``, a human-readable explanation. Replaying one is producing its
value, key and original headers back to ``conveyor-dlq-topic``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from engine.messaging.routing import DeadLetterReason

REASON = "conveyor-dlq-reason"
TOPIC = "conveyor-dlq-topic"
PARTITION = "conveyor-dlq-partition"
OFFSET = "conveyor-dlq-offset"
DETAIL = "conveyor-dlq-detail"
DLQ_HEADERS = frozenset({REASON, TOPIC, PARTITION, OFFSET, DETAIL})
MAX_DETAIL = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message to dead-letter, and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    reason: DeadLetterReason
    detail: str

    @classmethod
    def of(cls, record: Any, reason: DeadLetterReason, detail: str) -> DeadLetter:
        """From an aiokafka ``ConsumerRecord``."""
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            tuple(record.headers or ()),
            reason,
            detail,
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


async def publish(producer: AIOKafkaProducer, topic: str, letters: Sequence[DeadLetter]) -> None:
    """Publish dead letters and wait until the broker has every one (acks=all)."""
    futures = [
        await producer.send(topic, value=d.value, key=d.key, headers=d.headers_out())
        for d in letters
    ]
    for future in futures:
        await future
