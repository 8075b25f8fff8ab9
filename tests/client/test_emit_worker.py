"""Events published with the client's ``Emitter`` (structured and binary) reach a real
worker and apply; the one-shot ``emit`` starts an instance with a start event."""

from __future__ import annotations

import uuid

from conveyor_client import AsyncConveyor, Instance
from conveyor_client.emit import Emitter, emit
from tests.conftest import wait_for
from tests.e2e.http_support import order_data
from tests.live_support import LiveConsole


async def test_structured_and_binary_events_move_the_instance(
    admin: AsyncConveyor, live: LiveConsole, live_topics: str
) -> None:
    order = f"emit-{uuid.uuid4().hex[:8]}"
    started = await admin.start("order", order, order_data(order))

    async def in_state(state: str) -> Instance | None:
        instance = await admin.get(started.id)
        return instance if instance.state == state else None

    async with Emitter(live.settings.kafka_servers(), topic_prefix=live_topics) as emitter:
        first = await emitter.emit(
            "payment.initiated", order, {"payment_id": "p-1", "provider": "acme"}
        )
        assert first.topic == f"{live_topics}.in"
        await wait_for(lambda: in_state("payment_pending"), timeout=60)
        second = await emitter.emit(
            "payment.captured",
            order,
            {"payment_id": "p-1", "amount": "10", "currency": "EUR"},
            mode="binary",
            workflow="order",
            id=f"{order}-captured",
        )
        assert (second.id, second.topic) == (f"{order}-captured", f"{live_topics}.in.order")
        paid = await wait_for(lambda: in_state("paid"), timeout=60)
    assert paid.revision == 3
    history = [h async for h in admin.history(started.id)]
    assert [(h.event_type, h.event_id, h.source) for h in history[1:]] == [
        ("payment.initiated", first.id, "kafka"),
        ("payment.captured", f"{order}-captured", "kafka"),
    ]


async def test_the_one_shot_emit_starts_an_instance(
    admin: AsyncConveyor, live: LiveConsole, live_topics: str
) -> None:
    order = f"placed-{uuid.uuid4().hex[:8]}"
    sent = await emit(
        live.settings.kafka_servers(),
        "order.placed",
        order,
        order_data(order),
        topic_prefix=live_topics,
        source="tests/client",
    )

    async def found() -> Instance | None:
        async for instance in admin.instances(workflow="order", business_key_prefix=order):
            return instance
        return None

    instance = await wait_for(found, timeout=60)
    assert (instance.business_key, instance.state) == (order, "placed")
    (placed,) = [h async for h in admin.history(instance.id)]
    assert placed.event_id == sent.id
