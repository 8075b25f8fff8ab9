"""The outbox relay against the real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import NodeNotReadyError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.messaging.clients import create_producer
from engine.messaging.metrics import WorkerMetrics
from engine.messaging.relay import OutboxRelay
from engine.model import Event
from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.settings import Settings
from tests.conftest import wait_for
from tests.integration.test_worker import ORDER_TO_DELIVERED, consume, order_placed


@pytest.fixture
async def outbox_topics(
    settings: Settings, kafka_admin: AIOKafkaAdminClient
) -> AsyncIterator[dict[str, str]]:
    prefix = settings.topic_prefix
    names = {kind: f"{prefix}.{kind}" for kind in ("events", "commands", "instances")}
    await kafka_admin.create_topics(
        [NewTopic(name, num_partitions=3, replication_factor=1) for name in names.values()]
    )
    yield names
    await kafka_admin.delete_topics(list(names.values()))


@pytest.fixture
def runtime(db: AsyncEngine, settings: Settings) -> Runtime:
    return Runtime(db, load_workflows(["workflows"]), topic_prefix=settings.topic_prefix)


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


async def pay(runtime: Runtime, key: str) -> None:
    """Start order ``key`` and take it to paid: 3 state changes and one ``order.paid``."""
    await runtime.start("order", key, order_placed(key), idempotency_key=f"start-{key}")
    for step, (event_type, data) in enumerate(ORDER_TO_DELIVERED[1:3], start=1):
        outcome = await runtime.send(
            Event(event_type, f"{key}-{step}", data(key), workflow="order", business_key=key)
        )
        assert outcome.status == "applied"


async def outbox_rows(db: AsyncEngine) -> list[Any]:
    async with db.connect() as conn:
        result = await conn.execute(
            text("select topic, key, headers, value, published_at from outbox order by id")
        )
        return list(result)


async def unpublished(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        result = await conn.execute(text("select count(*) from outbox where published_at is null"))
        return int(result.scalar_one())


async def test_outbox_messages_arrive_on_their_topic_exactly_as_written(
    settings: Settings, db: AsyncEngine, runtime: Runtime, outbox_topics: dict[str, str]
) -> None:
    await pay(runtime, "o-1")
    rows = await outbox_rows(db)
    assert {r.topic for r in rows} == {outbox_topics["instances"], outbox_topics["events"]}
    async with running(OutboxRelay(db, settings, poll_interval=0.2)):
        await wait_for(lambda: _none_left(db))
    received = [
        *await consume(settings, outbox_topics["instances"], 3),
        *await consume(settings, outbox_topics["events"], 1),
    ]
    as_written = sorted(
        (r.topic, bytes(r.key), [(n, v.encode()) for n, v in r.headers], bytes(r.value))
        for r in rows
    )
    as_received = sorted((m.topic, m.key, list(m.headers), m.value) for m in received)
    assert as_received == as_written
    assert all(r.published_at is not None for r in await outbox_rows(db))


async def test_each_message_lands_in_the_partition_its_key_picks(
    settings: Settings, db: AsyncEngine, runtime: Runtime, outbox_topics: dict[str, str]
) -> None:
    keys = [f"o-p{i}" for i in range(9)]
    for key in keys:
        await pay(runtime, key)  # 3 state changes per key
    written = [r for r in await outbox_rows(db) if r.topic == outbox_topics["instances"]]

    def small_batches(s: Settings) -> AIOKafkaProducer:
        # About one message per record batch: the relay must roll over to new batches.
        return create_producer(s, client_id="conveyor-relay", max_batch_size=1024)

    relay = OutboxRelay(db, settings, poll_interval=0.2, producer_factory=small_batches)
    async with running(relay):
        await wait_for(lambda: _none_left(db))
    received = await consume(settings, outbox_topics["instances"], len(written))
    assert len(received) == len(written) == 3 * len(keys)
    # Per partition, the messages arrive in the order they were written.
    for partition in {m.partition for m in received}:
        keys_here = {m.key for m in received if m.partition == partition}
        in_order = [bytes(r.value) for r in written if bytes(r.key) in keys_here]
        arrived = sorted((m for m in received if m.partition == partition), key=lambda m: m.offset)
        assert [m.value for m in arrived] == in_order
    # A plain keyed send() picks the partition independently: the relay must agree.
    producer = create_producer(settings)
    await producer.start()
    try:
        for message in received:
            probe = await producer.send_and_wait(
                outbox_topics["instances"], b"probe", key=message.key
            )
            assert message.partition == probe.partition, message.key
    finally:
        await producer.stop()
    assert len({m.partition for m in received}) > 1  # 9 keys spread over 3 partitions


async def _none_left(db: AsyncEngine) -> bool:
    return await unpublished(db) == 0


async def test_a_notification_wakes_the_relay_long_before_its_poll_interval(
    settings: Settings, db: AsyncEngine, runtime: Runtime, outbox_topics: dict[str, str]
) -> None:
    metrics = WorkerMetrics()
    async with running(OutboxRelay(db, settings, metrics=metrics, poll_interval=30)):
        await wait_for(lambda: _leading(metrics))
        await asyncio.sleep(0.3)  # let the first (empty) round finish; not synchronisation
        started = time.monotonic()
        await runtime.start("order", "o-n", order_placed("o-n"))
        await wait_for(lambda: _none_left(db), timeout=5)
        elapsed = time.monotonic() - started
    assert elapsed < 5
    assert metrics.outbox_published == 1


async def _leading(metrics: WorkerMetrics) -> bool:
    return metrics.relay_leader


async def test_several_relays_publish_each_message_once_in_order_per_instance(
    settings: Settings, db: AsyncEngine, runtime: Runtime, outbox_topics: dict[str, str]
) -> None:
    first_m, second_m = WorkerMetrics(), WorkerMetrics()
    first = OutboxRelay(db, settings, metrics=first_m, poll_interval=0.1, batch_size=7)
    second = OutboxRelay(db, settings, metrics=second_m, poll_interval=0.1, batch_size=7)
    keys = [f"o-{i}" for i in range(10)]
    async with running(second):
        async with running(first):
            await wait_for(lambda: _one_leads(first_m, second_m))
            await asyncio.gather(*(pay(runtime, k) for k in keys[:5]))
            await wait_for(lambda: _none_left(db))
            assert first_m.relay_leader != second_m.relay_leader
        # The leader stopped: the standby takes over.
        await asyncio.gather(*(pay(runtime, k) for k in keys[5:]))
        await wait_for(lambda: _none_left(db))
        assert second_m.relay_leader
    changes = await consume(settings, outbox_topics["instances"], len(keys) * 3)
    ids = [orjson.loads(m.value)["id"] for m in changes]
    assert len(ids) == len(set(ids)) == len(keys) * 3
    for key in keys:
        revisions = [
            orjson.loads(m.value)["data"]["revision"] for m in changes if m.key == key.encode()
        ]
        assert revisions == [1, 2, 3]
    assert first_m.outbox_published + second_m.outbox_published == len(keys) * 4


async def _one_leads(a: WorkerMetrics, b: WorkerMetrics) -> bool:
    return a.relay_leader or b.relay_leader


class _BrokenOnce:
    """A producer that fails like aiokafka's after NodeNotReadyError (#1133)."""

    def __init__(self) -> None:
        self.stopped = False

    async def start(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> Any:
        raise NodeNotReadyError("node 1 not ready")

    async def send_batch(self, *args: Any, **kwargs: Any) -> Any:
        raise NodeNotReadyError("node 1 not ready")

    async def stop(self) -> None:
        self.stopped = True


async def test_the_relay_recreates_its_producer_after_a_kafka_error(
    settings: Settings, db: AsyncEngine, runtime: Runtime, outbox_topics: dict[str, str]
) -> None:
    made: list[Any] = []

    def factory(s: Settings) -> AIOKafkaProducer:
        producer: Any = _BrokenOnce() if not made else create_producer(s)
        made.append(producer)
        return producer

    metrics = WorkerMetrics()
    await runtime.start("order", "o-r", order_placed("o-r"))
    relay = OutboxRelay(db, settings, metrics=metrics, poll_interval=0.1, producer_factory=factory)
    async with running(relay):
        await wait_for(lambda: _none_left(db))
    assert metrics.relay_errors == 1
    assert len(made) == 2
    assert made[0].stopped
