"""The worker records every dead letter in PostgreSQL, once, before publishing it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import deadletters
from engine.settings import Settings
from engine.store.dead_letters import DeadLetterFilter, DeadLetterRecord
from engine.wire.cloudevents import CloudEvent, encode_structured
from tests.conftest import unique, wait_for
from tests.integration.test_worker import (
    Message,
    consume,
    order_events,
    produce,
    running_worker,
)


@pytest.fixture
async def worker_settings(
    settings: Settings, kafka_admin: AIOKafkaAdminClient
) -> AsyncIterator[Settings]:
    """The test's settings; every topic of its prefix is deleted afterwards."""
    yield settings
    names = [t for t in await kafka_admin.list_topics() if t.startswith(settings.topic_prefix)]
    if names:
        await kafka_admin.delete_topics(names)


def ce(event_id: str, type_: str, key: str, data: Any) -> Message:
    value, headers = encode_structured(
        CloudEvent(id=event_id, source="test", type=type_, subject=key, data=data)
    )
    return ("", key.encode(), value, [*headers, ("x-trace", b"\xff" + event_id.encode())])


async def letters(db: AsyncEngine) -> list[DeadLetterRecord]:
    page = await deadletters.list_dead_letters(db, DeadLetterFilter(), limit=500)
    return list(page.items)


async def test_dead_letters_are_stored_once_even_when_the_batch_is_redelivered(
    worker_settings: Settings, db: AsyncEngine
) -> None:
    settings = worker_settings
    topic = f"{settings.topic_prefix}.in"
    key = f"o-{uuid.uuid4().hex[:6]}"
    bad_payment = ce("dl-1", "payment.initiated", key, {"provider": ""})
    raw = ("", key.encode(), b"\x00 not a cloud event", [("x-trace", b"raw")])
    messages = [order_events(key)[0], bad_payment, raw]
    async with running_worker(settings):
        await produce(settings, topic, messages)
        await wait_for(lambda: _count(db, 2))
    stored = {r.reason: r for r in await letters(db)}
    assert set(stored) == {"invalid_payload", "undecodable"}
    payment = stored["invalid_payload"]
    assert (payment.event_id, payment.event_type) == ("dl-1", "payment.initiated")
    assert (payment.workflow, payment.business_key) == ("order", key)
    assert payment.topic == topic
    assert payment.value == bad_payment[2]
    assert payment.key == key.encode()
    assert list(payment.headers) == bad_payment[3]
    assert "payment_id" in payment.detail
    assert payment.seen_count == 1
    broken = stored["undecodable"]
    assert broken.value == raw[2]
    assert broken.event_id is None
    # Still published to the dead-letter topic, with the same offsets.
    published = await consume(settings, f"{settings.topic_prefix}.deadletter", 2)
    offsets = {int(dict(r.headers)["conveyor-dlq-offset"]) for r in published}
    assert offsets == {payment.offset, broken.offset}

    # A new consumer group reads the topic again from the start: every message is
    # redelivered. The dead letters keep their rows, seen twice now.
    again = settings.model_copy(update={"consumer_group": unique("group")})
    async with running_worker(again):
        await wait_for(lambda: _seen_twice(db))
    after = await letters(db)
    assert sorted(r.id for r in after) == sorted(r.id for r in stored.values())
    assert {r.first_seen_at for r in after} == {r.first_seen_at for r in stored.values()}


async def _count(db: AsyncEngine, n: int) -> bool:
    return len(await letters(db)) >= n


async def _seen_twice(db: AsyncEngine) -> bool:
    return all(r.seen_count == 2 for r in await letters(db))
