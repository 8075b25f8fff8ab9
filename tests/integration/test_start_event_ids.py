"""A start's history row and state_changed message name what started it: the CloudEvent id
(Kafka), the Idempotency-Key (HTTP), else the instance id."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.registry import Registry
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.writeset import STATE_CHANGED
from tests import flows
from tests.conftest import wait_for
from tests.e2e.http_support import make_keys, order_data, serve_in_process
from tests.integration.test_worker import order_events, produce, running_worker
from workflows.order import Order


@pytest.fixture
async def runtime(db: AsyncEngine, settings: Settings) -> Runtime:
    registry = Registry()
    for definition in (Order, flows.Counter):
        registry.register(definition)
    return Runtime(db, registry, topic_prefix=settings.topic_prefix)


async def start_records(db: AsyncEngine, instance_id: uuid.UUID) -> tuple[str, dict[str, Any]]:
    """The event id of the instance's start row in history, and its first state_changed
    message (the CloudEvent as stored in the outbox)."""
    async with db.connect() as conn:
        history = (
            await conn.execute(
                text("select event_id from history where instance_id = :i and outcome = 'started'"),
                {"i": instance_id},
            )
        ).scalar_one()
        values = (
            (
                await conn.execute(
                    text("select value from outbox where instance_id = :i order by id"),
                    {"i": instance_id},
                )
            )
            .scalars()
            .all()
        )
    messages = [orjson.loads(v) for v in values]
    (changed,) = [m for m in messages if m["type"] == STATE_CHANGED and m["data"]["revision"] == 1]
    return history, changed


async def test_a_start_records_the_event_id_it_is_given(runtime: Runtime, db: AsyncEngine) -> None:
    started = await runtime.start(
        "order", "o-1", order_data("o-1"), idempotency_key="ce-1", event_id="ce-1"
    )
    event_id, changed = await start_records(db, started.instance.id)
    assert event_id == "ce-1"
    assert changed["data"]["event_id"] == "ce-1"
    assert changed["data"]["to"] == started.instance.state


async def test_without_an_event_id_the_instance_id_is_recorded(
    runtime: Runtime, db: AsyncEngine
) -> None:
    # The idempotency key is the runtime's dedup key, not a name for the start (the HTTP
    # API scopes it by API key): only an explicit event id replaces the instance id.
    for started in (
        await runtime.start("order", "o-2", order_data("o-2"), idempotency_key="key-2"),
        await runtime.start("order", "o-3", order_data("o-3")),
    ):
        event_id, changed = await start_records(db, started.instance.id)
        own_id = str(started.instance.id)
        assert (event_id, changed["data"]["event_id"]) == (own_id, own_id)


async def test_one_event_may_start_several_instances_whose_timers_and_messages_stay_apart(
    runtime: Runtime, db: AsyncEngine
) -> None:
    # One CloudEvent can start several workflows (and one Idempotency-Key serve several):
    # the ids a start derives (timers, outbound messages) come from the instance id.
    a = (await runtime.start("test.counter", "a", {"key": "a"}, event_id="shared")).instance
    b = (await runtime.start("test.counter", "b", {"key": "b"}, event_id="shared")).instance
    for instance in (a, b):
        event_id, changed = await start_records(db, instance.id)
        assert (event_id, changed["data"]["event_id"]) == ("shared", "shared")
    async with db.connect() as conn:
        timers = (
            await conn.execute(text("select instance_id, id from timers order by instance_id"))
        ).all()
    assert sorted(t.instance_id for t in timers) == sorted([a.id, b.id])  # each its idle timer
    assert len({t.id for t in timers}) == 2


@pytest.fixture
async def worker_topics(
    settings: Settings, kafka_admin: AIOKafkaAdminClient
) -> AsyncIterator[Settings]:
    """Delete every topic of the test's prefix afterwards (the worker creates them)."""
    yield settings
    names = [t for t in await kafka_admin.list_topics() if t.startswith(settings.topic_prefix)]
    if names:
        await kafka_admin.delete_topics(names)


async def test_a_start_from_kafka_records_the_cloudevent_id(
    worker_topics: Settings, db: AsyncEngine
) -> None:
    settings = worker_topics
    placed = order_events("o-kafka")[0]  # CloudEvent id "o-kafka-0"

    async def started() -> uuid.UUID | None:
        async with db.connect() as conn:
            return (
                await conn.execute(text("select id from instances where business_key = 'o-kafka'"))
            ).scalar_one_or_none()

    async with running_worker(settings) as metrics:
        await produce(settings, f"{settings.topic_prefix}.in", [placed])
        instance_id = await wait_for(started, timeout=20)
    assert metrics.started == 1
    event_id, changed = await start_records(db, instance_id)
    assert event_id == "o-kafka-0"
    assert changed["data"]["event_id"] == "o-kafka-0"
    assert changed["subject"] == "o-kafka"


async def test_a_start_over_http_records_its_idempotency_key(
    settings: Settings, db: AsyncEngine
) -> None:
    keys = await make_keys(settings)
    async with (
        serve_in_process(settings) as base,
        httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {keys.write}"}, timeout=10
        ) as http,
    ):
        keyed = await http.post(
            "/v1/workflows/order/instances",
            json={"business_key": "o-http-1", "data": order_data("o-http-1")},
            headers={"Idempotency-Key": "idem-http-1"},
        )
        assert keyed.status_code == 201, keyed.text
        plain = await http.post(
            "/v1/workflows/order/instances",
            json={"business_key": "o-http-2", "data": order_data("o-http-2")},
        )
        assert plain.status_code == 201, plain.text
    event_id, changed = await start_records(db, uuid.UUID(keyed.json()["id"]))
    assert (event_id, changed["data"]["event_id"]) == ("idem-http-1", "idem-http-1")
    plain_id = plain.json()["id"]
    event_id, changed = await start_records(db, uuid.UUID(plain_id))
    assert (event_id, changed["data"]["event_id"]) == (plain_id, plain_id)
