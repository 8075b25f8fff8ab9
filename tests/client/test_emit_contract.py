"""The client's CloudEvents as Conveyor's worker reads them: what ``Emitter`` would publish
(topic, key, value, headers) decoded by ``engine.wire.cloudevents.decode`` and routed by
``engine.messaging.routing.Router`` to the right instance or business key. Pure."""

from __future__ import annotations

import uuid

import pytest

from conveyor_client.cloudevents import Mode, encode, event_for
from conveyor_client.emit import inbound_topic
from engine.messaging.routing import Routed, Router, StartCommand
from engine.model import Event
from engine.registry import load_workflows
from engine.wire.cloudevents import decode
from engine.wire.topics import Topics

PREFIX = "shop"
ROUTER = Router(load_workflows(["workflows"]), PREFIX)
MODES: tuple[Mode, ...] = ("structured", "binary")


def routed(topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]]) -> Routed:
    result = ROUTER.route_message(topic, key.encode(), value, headers)
    assert isinstance(result, Routed), result
    return result


def test_the_topics_are_the_workers() -> None:
    assert inbound_topic(PREFIX) == Topics(PREFIX).shared
    assert inbound_topic(PREFIX, "order") == Topics(PREFIX).workflow("order")
    assert set(ROUTER.topics) >= {inbound_topic(PREFIX), inbound_topic(PREFIX, "order")}


@pytest.mark.parametrize("mode", MODES)
def test_an_event_decodes_with_its_attributes_and_routes_by_business_key(mode: Mode) -> None:
    data = {"payment_id": "p-1", "amount": "10.50", "currency": "EUR"}
    event = event_for("payment.captured", "o-7", data, source="shop/payments", id="e-1")
    value, headers = encode(event, mode)
    decoded = decode(value, headers)
    assert (decoded.id, decoded.source, decoded.type, decoded.subject, decoded.data) == (
        "e-1",
        "shop/payments",
        "payment.captured",
        "o-7",
        data,
    )
    assert decoded.time == event.time
    for topic in (inbound_topic(PREFIX), inbound_topic(PREFIX, "order")):
        (delivery,) = routed(topic, "o-7", value, headers).deliveries
        assert isinstance(delivery, Event)
        assert (delivery.workflow, delivery.business_key, delivery.event_id) == (
            "order",
            "o-7",
            "e-1",
        )
        assert (delivery.type, dict(delivery.payload)) == ("payment.captured", data)


@pytest.mark.parametrize("mode", MODES)
def test_an_instance_id_addresses_that_instance(mode: Mode) -> None:
    target = uuid.uuid4()
    event = event_for(
        "payment.captured", "o-7", {}, source="shop", id="e-2", instance_id=str(target)
    )
    (delivery,) = routed(inbound_topic(PREFIX), "o-7", *encode(event, mode)).deliveries
    assert isinstance(delivery, Event)
    assert (delivery.instance_id, delivery.business_key) == (target, None)


@pytest.mark.parametrize("mode", MODES)
def test_a_start_event_starts_an_instance_under_the_key(mode: Mode) -> None:
    data = {
        "order_id": "o-8",
        "customer_id": "c-1",
        "currency": "EUR",
        "items": [{"sku": "s", "quantity": 1, "unit_price": "5"}],
        "total": "5",
    }
    event = event_for("order.placed", "o-8", data, source="shop", id="e-3")
    (start,) = routed(inbound_topic(PREFIX), "o-8", *encode(event, mode)).deliveries
    assert isinstance(start, StartCommand)
    assert (start.workflow, start.business_key, start.idempotency_key) == ("order", "o-8", "e-3")
