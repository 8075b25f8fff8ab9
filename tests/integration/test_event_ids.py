"""Event ids are deduplicated per instance: the same id for another instance is another event.

A client that sends an event id first (even to its own instance, even refused) must not
turn another instance's event of that id into a duplicate; a redelivery to the same
instance stays a duplicate.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import operations
from engine.model import Event, InstanceStatus
from engine.registry import Registry
from engine.runtime import Runtime
from engine.settings import Settings
from tests import flows
from workflows.order import Order

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PAYMENT = {"payment_id": "P-1", "provider": "x"}


def order_data(order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "C-1",
        "currency": "EUR",
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": "5"}],
        "total": "10",
    }


def event(instance_id: uuid.UUID, type_: str, event_id: str, **payload: Any) -> Event:
    return Event(type=type_, event_id=event_id, payload=payload, instance_id=instance_id)


@pytest.fixture
def runtime(db: AsyncEngine, settings: Settings) -> Runtime:
    registry = Registry()
    for definition in (Order, flows.Counter):
        registry.register(definition)
    return Runtime(db, registry, topic_prefix=settings.topic_prefix, clock=lambda: T0)


@pytest.fixture(autouse=True)
def _reset_failures() -> Iterator[None]:
    flows.FAILURES.clear()
    yield
    flows.FAILURES.clear()


async def scalar(db: AsyncEngine, query: str, **params: Any) -> Any:
    async with db.connect() as conn:
        return (await conn.execute(text(query), params)).scalar_one()


async def test_an_event_id_refused_for_one_instance_still_applies_to_another(
    runtime: Runtime,
) -> None:
    a = (await runtime.start("order", "A", order_data("A"))).instance
    b = (await runtime.start("order", "B", order_data("B"))).instance
    squatted = await runtime.send(event(a.id, "order.packed", "X"))  # not allowed in 'placed'
    assert squatted.status == "rejected"

    applied = await runtime.send(event(b.id, "payment.initiated", "X", **PAYMENT))
    assert (applied.status, applied.to_state) == ("applied", "payment_pending")

    assert (await runtime.send(event(a.id, "order.packed", "X"))).status == "duplicate"
    again = await runtime.send(event(b.id, "payment.initiated", "X", **PAYMENT))
    assert again.status == "duplicate"
    assert (await runtime.get(b.id)).revision == 2
    assert [h.event_id for h in await runtime.history(b.id)].count("X") == 1


async def test_one_batch_applies_an_event_id_once_per_instance(
    runtime: Runtime, db: AsyncEngine
) -> None:
    a = (await runtime.start("order", "A", order_data("A"))).instance
    b = (await runtime.start("order", "B", order_data("B"))).instance
    outcomes = await runtime.send_many(
        [
            event(a.id, "payment.initiated", "X", **PAYMENT),
            event(b.id, "payment.initiated", "X", **PAYMENT),
            event(a.id, "payment.initiated", "X", **PAYMENT),
        ]
    )
    assert [o.status for o in outcomes] == ["applied", "applied", "duplicate"]
    assert [o.instance_id for o in outcomes[:2]] == [a.id, b.id]
    # What the two decisions derive from the event id stays distinct per instance.
    timers = await scalar(
        db, "select count(distinct id) from timers where name = 'payment_timeout'"
    )
    assert timers == 2
    messages = await scalar(db, "select count(*) - count(distinct message_id) from outbox")
    assert messages == 0
    assert await scalar(db, "select count(*) from inbox where event_id = 'X'") == 2


async def test_events_by_business_key_are_deduplicated_per_instance(runtime: Runtime) -> None:
    for key in ("A", "B"):
        await runtime.start("order", key, order_data(key))

    def by_key(key: str) -> Event:
        return Event(
            type="payment.initiated",
            event_id="X",
            payload=PAYMENT,
            workflow="order",
            business_key=key,
        )

    outcomes = [await runtime.send(by_key(k)) for k in ("A", "B", "A", "B")]
    assert [o.status for o in outcomes] == ["applied", "applied", "duplicate", "duplicate"]


async def test_an_operator_retry_forgets_the_event_id_of_its_instance_only(
    runtime: Runtime,
) -> None:
    ok = (await runtime.start("test.counter", "OK", {"key": "OK"})).instance
    failing = (await runtime.start("test.counter", "BAD", {"key": "BAD"})).instance
    label = {"label": "l"}
    assert (await runtime.send(event(ok.id, "counter.label", "L", **label))).status == "applied"
    flows.FAILURES["BAD"] = 3  # every attempt of the policy fails
    failed = await runtime.send(event(failing.id, "counter.label", "L", **label))
    assert failed.status == "failed"
    assert (await runtime.get(failing.id)).status is InstanceStatus.FAILED

    retried = await operations.retry(runtime, failing.id)
    assert (retried.status, retried.to_state) == ("applied", "labelled")
    # The other instance's record of "L" survived the retry: still a duplicate there.
    assert (await runtime.send(event(ok.id, "counter.label", "L", **label))).status == "duplicate"
    again = await runtime.send(event(failing.id, "counter.label", "L", **label))
    assert again.status == "duplicate"
