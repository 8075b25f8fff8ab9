"""The worker against the real Kafka and PostgreSQL: events in, transitions out, once each."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.messaging.clients import create_consumer, create_producer
from engine.messaging.consumer import ConsumerOptions
from engine.messaging.metrics import WorkerMetrics
from engine.settings import Settings
from engine.wire.cloudevents import CloudEvent, encode_binary, encode_structured
from engine.worker import run_worker
from tests.conftest import unique, wait_for

FAST = ConsumerOptions(
    watchdog_interval=1.0,
    consumer_overrides={"session_timeout_ms": 6000, "heartbeat_interval_ms": 300},
)

Message = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]  # topic, key, value, hdrs


def order_placed(key: str) -> dict[str, Any]:
    return {
        "order_id": key,
        "customer_id": "c-1",
        "currency": "EUR",
        "items": [{"sku": "sku-1", "quantity": 2, "unit_price": "5.00"}],
        "total": "10.00",
    }


ORDER_TO_DELIVERED: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
    ("order.placed", order_placed),
    ("payment.initiated", lambda k: {"payment_id": f"pay-{k}", "provider": "card"}),
    (
        "payment.captured",
        lambda k: {"payment_id": f"pay-{k}", "amount": "10.00", "currency": "EUR"},
    ),
    ("order.packed", lambda k: {}),
    ("order.shipped", lambda k: {"carrier": "dhl", "tracking_number": f"t-{k}"}),
    ("delivery.out_for_delivery", lambda k: {}),
    ("delivery.completed", lambda k: {}),
]


def order_events(key: str, *, binary: bool = False) -> list[Message]:
    """The CloudEvents that take order ``key`` from placed to delivered, as messages."""
    messages: list[Message] = []
    for step, (event_type, data) in enumerate(ORDER_TO_DELIVERED):
        event = CloudEvent(
            id=f"{key}-{step}", source="test/shop", type=event_type, subject=key, data=data(key)
        )
        value, headers = (encode_binary if binary else encode_structured)(event)
        messages.append(("", key.encode(), value, headers))
    return messages


async def produce(settings: Settings, topic: str, messages: Sequence[Message]) -> None:
    """Send in order and wait for every acknowledgement (topic "" means ``topic``)."""
    producer = create_producer(settings)
    await producer.start()
    try:
        futures = [
            await producer.send(t or topic, value=v, key=k, headers=h) for t, k, v, h in messages
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def consume(settings: Settings, topic: str, want: int, timeout: float = 15.0) -> list[Any]:
    """Read ``want`` records of ``topic`` from the start (a throwaway group)."""
    consumer = create_consumer(
        settings.model_copy(update={"consumer_group": unique("reader")}), topic
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def state_of(db: AsyncEngine, workflow: str, key: str) -> str | None:
    async with db.connect() as conn:
        row = await conn.execute(
            text("select state from instances where workflow = :w and business_key = :k"),
            {"w": workflow, "k": key},
        )
        return row.scalar_one_or_none()


async def history_counts(db: AsyncEngine) -> dict[str, int]:
    """event_id -> number of history rows for it."""
    async with db.connect() as conn:
        rows = await conn.execute(text("select event_id, count(*) from history group by 1"))
        return {r[0]: r[1] for r in rows}


@pytest.fixture
async def conveyor_topics(
    settings: Settings, kafka_admin: AIOKafkaAdminClient
) -> AsyncIterator[Settings]:
    """Delete every topic of the test's prefix afterwards (the worker creates them)."""
    yield settings
    names = [t for t in await kafka_admin.list_topics() if t.startswith(settings.topic_prefix)]
    if names:
        await kafka_admin.delete_topics(names)


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, metrics: WorkerMetrics | None = None
) -> AsyncIterator[WorkerMetrics]:
    """A whole worker (consumer, relay, scheduler) as a task, with partitions assigned."""
    metrics = metrics or WorkerMetrics()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(
            settings, stop=stop, install_signals=False, metrics=metrics, consumer_options=FAST
        )
    )
    try:
        await wait_for(lambda: _assigned(metrics, task), timeout=20)
        yield metrics
    finally:
        stop.set()
        async with asyncio.timeout(25):
            status = await task
        assert status == 0


async def _assigned(metrics: WorkerMetrics, task: asyncio.Task[Any]) -> bool:
    if task.done():
        raise AssertionError(f"worker exited early: {task.result()}")
    return metrics.assigned_partitions > 0


async def test_an_order_goes_from_placed_to_delivered_driven_only_by_kafka_events(
    conveyor_topics: Settings, db: AsyncEngine
) -> None:
    settings = conveyor_topics
    async with running_worker(settings) as metrics:
        # Structured mode on the shared topic, binary mode on the workflow's own topic.
        await produce(settings, f"{settings.topic_prefix}.in", order_events("o-1"))
        await produce(
            settings, f"{settings.topic_prefix}.in.order", order_events("o-2", binary=True)
        )

        async def delivered() -> bool:
            states = [await state_of(db, "order", k) for k in ("o-1", "o-2")]
            return states == ["delivered", "delivered"]

        await wait_for(delivered, timeout=20)
    counts = await history_counts(db)
    assert all(counts[f"{k}-{i}"] == 1 for k in ("o-1", "o-2") for i in range(1, 7))
    assert metrics.started == 2
    assert metrics.applied == 12
    assert sum(metrics.dead_lettered.values()) == 0


async def test_the_same_cloudevent_delivered_twice_takes_effect_once(
    conveyor_topics: Settings, db: AsyncEngine
) -> None:
    settings = conveyor_topics
    topic = f"{settings.topic_prefix}.in"
    events = order_events("o-dup")[:3]
    async with running_worker(settings) as metrics:
        # Each message twice, the second copy after the first is applied (not in one batch).
        await produce(settings, topic, events)
        await wait_for(lambda: _state_is(db, "o-dup", "paid"))
        await produce(settings, topic, events)
        await wait_for(lambda: _counted(metrics, 6))
    assert await state_of(db, "order", "o-dup") == "paid"
    counts = await history_counts(db)
    assert [counts.get(f"o-dup-{i}") for i in (1, 2)] == [1, 1]
    async with db.connect() as conn:
        starts = (await conn.execute(text("select count(*) from instances"))).scalar_one()
    assert starts == 1
    assert metrics.duplicates == 3
    assert sum(metrics.dead_lettered.values()) == 0


async def _state_is(db: AsyncEngine, key: str, state: str) -> bool:
    return await state_of(db, "order", key) == state


async def _counted(metrics: WorkerMetrics, messages: int) -> bool:
    return metrics.messages >= messages and metrics.batches > 0 and _settled(metrics, messages)


def _settled(metrics: WorkerMetrics, messages: int) -> bool:
    done = (
        metrics.started
        + metrics.applied
        + metrics.duplicates
        + metrics.rejected
        + metrics.failed
        + sum(metrics.dead_lettered.values())
    )
    return done >= messages


async def test_each_kind_of_bad_message_is_dead_lettered_while_the_next_one_applies(
    conveyor_topics: Settings, db: AsyncEngine
) -> None:
    settings = conveyor_topics
    prefix = settings.topic_prefix
    topic = f"{prefix}.in"

    def ce(event_id: str, type_: str, key: str, data: Any) -> Message:
        value, headers = encode_structured(
            CloudEvent(id=event_id, source="test", type=type_, subject=key, data=data)
        )
        return ("", key.encode(), value, [*headers, ("x-trace", event_id.encode())])

    placed = order_events("o-bad")[0]
    bad: list[tuple[str, Message]] = [
        ("undecodable", ("", b"o-bad", b"\x00\x01 not a cloud event", [("x-trace", b"raw")])),
        (
            "missing_attributes",
            ("", b"o-bad", orjson.dumps({"specversion": "1.0", "id": "m-1", "type": "x"}), []),
        ),
        ("unknown_type", ce("m-2", "order.teleported", "o-bad", {})),
        ("invalid_payload", ce("m-3", "payment.initiated", "o-bad", {"provider": ""})),
        (
            "no_instance",
            ce("m-4", "payment.initiated", "o-missing", {"payment_id": "p", "provider": "c"}),
        ),
        (
            "invalid_payload",
            ce("m-5", "order.placed", "o-bad-start", {"order_id": "o-bad-start"}),
        ),
    ]
    good = ce("m-6", "payment.initiated", "o-bad", {"payment_id": "p-1", "provider": "card"})
    not_allowed = ce("m-7", "delivery.completed", "o-bad", {})  # refused in payment_pending
    async with running_worker(settings) as metrics:
        await produce(settings, topic, [placed, *[m for _, m in bad], good, not_allowed])
        await wait_for(lambda: _counted(metrics, 9), timeout=20)
    assert await state_of(db, "order", "o-bad") == "payment_pending"
    assert await state_of(db, "order", "o-bad-start") is None
    counts = await history_counts(db)
    assert counts["m-6"] == 1
    assert counts["m-7"] == 1  # rejected: in history, not dead-lettered
    assert metrics.rejected == 2  # m-3 (invalid payload, also in history) and m-7

    letters = await consume(settings, f"{prefix}.deadletter", len(bad))
    assert len(letters) == len(bad)
    by_value = {letter.value: letter for letter in letters}  # partitions interleave
    for reason, (_t, key, value, headers) in bad:
        letter = by_value[value]
        got = dict(letter.headers)
        assert got["conveyor-dlq-reason"].decode() == reason
        assert got["conveyor-dlq-topic"].decode() == topic
        assert int(got["conveyor-dlq-offset"]) >= 0
        assert "conveyor-dlq-partition" in got
        assert got["conveyor-dlq-detail"]
        assert letter.key == key
        assert [h for h in letter.headers if not h[0].startswith("conveyor-dlq-")] == headers
    assert dict(metrics.dead_lettered) == {
        "undecodable": 1,
        "missing_attributes": 1,
        "unknown_type": 1,
        "invalid_payload": 2,
        "no_instance": 1,
    }


async def test_two_workers_in_one_group_share_partitions_and_apply_every_event_once(
    conveyor_topics: Settings, db: AsyncEngine
) -> None:
    settings = conveyor_topics
    keys = [f"o-{i}" for i in range(40)]
    async with running_worker(settings) as first, running_worker(settings) as second:

        async def balanced() -> bool:
            return first.assigned_partitions + second.assigned_partitions == 6 * 4 and (
                first.assigned_partitions > 0 and second.assigned_partitions > 0
            )

        await wait_for(balanced, timeout=20)
        messages = [m for k in keys for m in order_events(k)]
        await produce(settings, f"{settings.topic_prefix}.in", messages)

        async def all_delivered() -> bool:
            async with db.connect() as conn:
                n = await conn.execute(
                    text("select count(*) from instances where state = 'delivered'")
                )
                return int(n.scalar_one()) == len(keys)

        await wait_for(all_delivered, timeout=30)
    counts = await history_counts(db)
    assert len(counts) == len(keys) * 7  # 6 events + the start (recorded under the instance id)
    assert set(counts.values()) == {1}
    assert first.messages > 0
    assert second.messages > 0
    assert first.started + second.started == len(keys)
    assert first.applied + second.applied == len(keys) * 6


def test_order_events_are_distinct_per_key() -> None:
    ids = {orjson.loads(v or b"{}")["id"] for _, _, v, _ in order_events(str(uuid.uuid4()))}
    assert len(ids) == len(ORDER_TO_DELIVERED)


async def test_lag_counts_the_messages_not_yet_consumed(
    settings: Settings, db: AsyncEngine, make_topic: Callable[..., Any]
) -> None:
    from aiokafka import TopicPartition

    from engine.messaging.consumer import EventConsumer
    from engine.messaging.routing import Router
    from engine.registry import load_workflows
    from engine.runtime import Runtime

    topic = await make_topic("lag", partitions=1)
    await produce(settings, topic, order_events("LAG-1")[:5])
    registry = load_workflows(settings.workflow_modules)
    consumer = EventConsumer(
        settings, Runtime(db, registry), Router(registry, settings.topic_prefix), WorkerMetrics()
    )
    reader = create_consumer(settings, group_id=None)
    reader.assign([TopicPartition(topic, 0)])
    await reader.start()
    try:
        await reader.seek_to_beginning(TopicPartition(topic, 0))
        consumer._consumer = reader  # what run() would have made, without consuming
        # The highwater mark is learnt from a fetch; poll until it is known.
        lag = await wait_for(consumer._lag, timeout=10)
        assert lag == 5
        await reader.getmany(timeout_ms=2000)
        reader.seek(TopicPartition(topic, 0), 3)
        assert await consumer._lag() == 2
    finally:
        await reader.stop()


async def test_a_consumer_that_stops_receiving_despite_lag_is_replaced(
    conveyor_topics: Settings, db: AsyncEngine
) -> None:
    """aiokafka can stay silent after a broker restart; pausing its partitions looks the
    same from the outside: lag grows, nothing arrives. The watchdog must replace it."""
    from engine.messaging.consumer import EventConsumer
    from engine.messaging.routing import Router
    from engine.registry import load_workflows
    from engine.runtime import Runtime
    from engine.worker import ensure_topics

    settings = conveyor_topics
    registry = load_workflows(settings.workflow_modules)
    router = Router(registry, settings.topic_prefix)
    await ensure_topics(settings, router.topics)
    metrics = WorkerMetrics()
    options = ConsumerOptions(
        watchdog_interval=0.3,
        stall_after=1.5,
        consumer_overrides={"session_timeout_ms": 6000, "heartbeat_interval_ms": 300},
    )
    consumer = EventConsumer(settings, Runtime(db, registry), router, metrics, options=options)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await wait_for(lambda: _assigned(metrics, task), timeout=20)
        stuck = consumer._consumer
        assert stuck is not None
        stuck.pause(*stuck.assignment())  # receives nothing from now on
        await produce(settings, f"{settings.topic_prefix}.in", order_events("STUCK-1"))

        async def delivered() -> bool:
            return await state_of(db, "order", "STUCK-1") == "delivered"

        await wait_for(delivered, timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert metrics.consumer_restarts >= 1
    assert metrics.stalls >= 1
    counts = await history_counts(db)
    assert set(counts.values()) == {1}
