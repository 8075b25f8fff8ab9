"""How far the worker's consumer group is behind, read from Kafka by anyone (the console).

Lag per partition is the partition's end offset minus the group's committed offset, for
every partition the group has committed on. Reading it opens two short-lived clients, so
callers cache the answer (:class:`LagCache`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from engine.settings import Settings

LAG_TTL_SECONDS = 10.0
LAG_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    total: int
    partitions: dict[str, int]  # "topic[partition]" -> lag
    error: str | None = None


async def group_lag(settings: Settings) -> GroupLag:
    """The worker group's lag now; an answer with ``error`` when Kafka cannot tell."""
    group = settings.consumer_group
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers())
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_servers(), group_id=None)
    try:
        async with asyncio.timeout(LAG_TIMEOUT_SECONDS):
            await admin.start()
            committed = await admin.list_consumer_group_offsets(group)
            partitions = [tp for tp, meta in committed.items() if meta is not None]
            if not partitions:
                return GroupLag(group, 0, {})
            await consumer.start()
            ends = await consumer.end_offsets(partitions)
    except Exception as error:  # Kafka down or slow: the console says so
        return GroupLag(group, 0, {}, f"{type(error).__name__}: {error}"[:300])
    finally:
        await consumer.stop()
        await admin.close()
    lags = {
        f"{tp.topic}[{tp.partition}]": max(ends[tp] - max(committed[tp].offset, 0), 0)
        for tp in partitions
    }
    return GroupLag(group, sum(lags.values()), lags)


class LagCache:
    """One reading shared for ``ttl`` seconds."""

    def __init__(self, ttl: float = LAG_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._at = 0.0
        self._answer: GroupLag | None = None
        self._lock = asyncio.Lock()

    async def get(self, settings: Settings) -> GroupLag:
        async with self._lock:
            if self._answer is None or time.monotonic() - self._at >= self.ttl:
                self._answer = await group_lag(settings)
                self._at = time.monotonic()
            return self._answer


__all__ = ["GroupLag", "LagCache", "group_lag"]
