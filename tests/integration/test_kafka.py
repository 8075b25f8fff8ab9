"""Produce and consume through the real broker with a consumer group and manual commits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiokafka import TopicPartition

from engine.messaging.clients import create_consumer, create_producer
from engine.settings import Settings
from tests.conftest import unique


async def _drain(consumer: object, want: int, timeout_ms: int = 15000) -> list[bytes]:
    import time

    values: list[bytes] = []
    deadline = time.monotonic() + timeout_ms / 1000
    while len(values) < want and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=200)  # type: ignore[attr-defined]
        for records in batches.values():
            values.extend(r.value for r in records)
    return values


async def test_consumer_group_resumes_after_its_last_manual_commit(
    base_settings: Settings, make_topic: Callable[..., Awaitable[str]]
) -> None:
    topic = await make_topic("roundtrip", partitions=1)
    group = unique("group")
    settings = base_settings.model_copy(update={"consumer_group": group})
    producer = create_producer(settings)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=b"K")

        first = create_consumer(settings, topic)
        await first.start()
        try:
            got = await _drain(first, 10)
            assert got == [f"m{i}".encode() for i in range(10)]
            # Commit only the first 6: the group must resume at m6.
            await first.commit({TopicPartition(topic, 0): 6})
        finally:
            await first.stop()

        for i in range(10, 12):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=b"K")

        second = create_consumer(settings, topic)
        await second.start()
        try:
            resumed = await _drain(second, 6)
        finally:
            await second.stop()
    finally:
        await producer.stop()
    assert resumed == [f"m{i}".encode() for i in range(6, 12)]


async def test_idempotent_producer_keeps_per_key_order_across_partitions(
    base_settings: Settings, make_topic: Callable[..., Awaitable[str]]
) -> None:
    topic = await make_topic("ordered", partitions=3)
    settings = base_settings.model_copy(update={"consumer_group": unique("group")})
    producer = create_producer(settings)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, f"{key}:{i}".encode(), key=key.encode())
            for i in range(50)
            for key in ("A", "B", "C", "D")
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()
    consumer = create_consumer(settings, topic)
    await consumer.start()
    try:
        values = await _drain(consumer, 200)
    finally:
        await consumer.stop()
    assert len(values) == 200
    for key in ("A", "B", "C", "D"):
        seq = [int(v.split(b":")[1]) for v in values if v.startswith(key.encode())]
        assert seq == list(range(50))
