"""Routing: topics, type -> workflow, business key / instance id, starts, fan-out."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import BaseModel

from engine.dsl import State, Workflow
from engine.messaging.routing import (
    Routed,
    Router,
    StartCommand,
    Unroutable,
    apart_from_starts,
    group_starts,
    starts_first,
)
from engine.model import Event
from engine.registry import Registry
from engine.wire.cloudevents import CloudEvent, encode_binary, encode_structured


class Parcel(BaseModel):
    parcel_id: str
    weight: int = 0


class ParcelFlow(Workflow[Parcel]):
    name = "parcel"
    data_schema = Parcel
    start_event = "parcel.registered"

    registered = State(initial=True)
    sent = State()
    done = State(final=True)

    send = registered.on("parcel.sent").to(sent)
    arrive = sent.on("parcel.arrived").to(done)

    @classmethod
    def initial_data_from(cls, start_payload: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"parcel_id": start_payload["id"], "weight": start_payload.get("kg", 0)}


class Invoice(BaseModel):
    number: str = "n/a"


class InvoiceFlow(Workflow[Invoice]):
    name = "invoice"
    data_schema = Invoice

    open = State(initial=True)
    closed = State(final=True)

    close = open.on("parcel.arrived").to(closed)  # also handled by parcel: fan-out


@pytest.fixture
def router() -> Router:
    registry = Registry()
    registry.register(ParcelFlow)
    registry.register(InvoiceFlow)
    return Router(registry, "shop")


def ce(type_: str, **kwargs: Any) -> CloudEvent:
    return CloudEvent(id=kwargs.pop("id", "e-1"), source="test", type=type_, **kwargs)


def routed(result: Routed | Unroutable) -> Routed:
    assert isinstance(result, Routed), result
    return result


def test_worker_reads_the_shared_topic_and_one_topic_per_workflow(router: Router) -> None:
    assert router.topics == ("shop.in", "shop.in.invoice", "shop.in.parcel")
    assert router.names.deadletter == "shop.deadletter"


def test_business_key_is_the_subject_else_the_message_key(router: Router) -> None:
    by_subject = routed(router.route("shop.in", b"key-1", ce("parcel.sent", subject="p-9")))
    by_key = routed(router.route("shop.in", b"key-1", ce("parcel.sent")))
    assert by_subject.deliveries == (
        Event("parcel.sent", "e-1", {}, workflow="parcel", business_key="p-9", source="kafka"),
    )
    (event,) = by_key.deliveries
    assert isinstance(event, Event)
    assert event.business_key == "key-1"


def test_conveyorinstance_addresses_the_instance_directly(router: Router) -> None:
    instance = uuid.uuid4()
    result = routed(
        router.route(
            "shop.in",
            b"key-1",
            ce("parcel.arrived", data={"x": 1}, extensions={"conveyorinstance": str(instance)}),
        )
    )
    assert result.deliveries == (
        Event("parcel.arrived", "e-1", {"x": 1}, instance_id=instance, source="kafka"),
    )


def test_start_event_becomes_a_start_keyed_by_the_cloudevent_id(router: Router) -> None:
    result = routed(
        router.route(
            "shop.in", None, ce("parcel.registered", id="ce-7", subject="p-1", data={"id": "p-1"})
        )
    )
    assert result.deliveries == (
        StartCommand(
            "parcel", "p-1", {"parcel_id": "p-1", "weight": 0}, "ce-7", "parcel.registered"
        ),
    )


def test_a_type_several_workflows_handle_fans_out_with_derived_event_ids(router: Router) -> None:
    result = routed(router.route("shop.in", b"k", ce("parcel.arrived", id="x")))
    ids = {d.workflow: d.event_id for d in result.deliveries if isinstance(d, Event)}
    assert ids == {"invoice": "x@invoice", "parcel": "x@parcel"}


def test_a_workflow_topic_only_feeds_that_workflow(router: Router) -> None:
    result = routed(router.route("shop.in.parcel", b"k", ce("parcel.arrived", id="x")))
    assert [(d.workflow, d.event_id) for d in result.deliveries if isinstance(d, Event)] == [
        ("parcel", "x")
    ]
    refused = router.route("shop.in.invoice", b"k", ce("parcel.sent"))
    assert isinstance(refused, Unroutable)
    assert refused.reason == "unknown_type"
    assert "invoice" in refused.detail


@pytest.mark.parametrize(
    ("key", "event", "reason"),
    [
        (b"k", ce("nobody.handles.this"), "unknown_type"),
        (None, ce("parcel.sent"), "missing_business_key"),
        (b"\xff\xfe", ce("parcel.sent"), "missing_business_key"),
        (b"k", ce("parcel.sent", extensions={"conveyorinstance": "nope"}), "invalid_instance_id"),
        (b"k", ce("parcel.sent", data=[1, 2]), "invalid_payload"),
        (b"k", ce("parcel.registered", data={"no_id": 1}), "invalid_payload"),
    ],
)
def test_messages_that_cannot_be_routed_say_why(
    router: Router, key: bytes | None, event: CloudEvent, reason: str
) -> None:
    result = router.route("shop.in", key, event)
    assert isinstance(result, Unroutable)
    assert result.reason == reason


def test_route_message_decodes_both_modes_and_classifies_bad_bytes(router: Router) -> None:
    event = ce("parcel.sent", subject="p-1", data={"a": 1})
    for value, headers in (encode_structured(event), encode_binary(event)):
        assert routed(router.route_message("shop.in", None, value, headers)).event == event
    garbage = router.route_message("shop.in", b"k", b"\x00garbage", [])
    assert isinstance(garbage, Unroutable)
    assert garbage.reason == "undecodable"
    missing = router.route_message("shop.in", b"k", b'{"specversion": "1.0", "id": "1"}', [])
    assert isinstance(missing, Unroutable)
    assert missing.reason == "missing_attributes"


def test_starts_run_before_events_and_group_by_business_key() -> None:
    a1 = StartCommand("parcel", "a", {}, "1", "parcel.registered")
    b1 = StartCommand("parcel", "b", {}, "2", "parcel.registered")
    a2 = StartCommand("parcel", "a", {}, "3", "parcel.registered")
    ev = Event("parcel.sent", "4", workflow="parcel", business_key="a")
    starts, events = starts_first([(0, a1), (1, ev), (2, b1), (3, a2)])
    assert events == [(1, ev)]
    assert group_starts(starts) == [[(0, a1), (3, a2)], [(2, b1)]]


def test_only_events_for_a_key_started_in_the_batch_wait_for_the_starts() -> None:
    start_a = StartCommand("parcel", "a", {}, "1", "parcel.registered")
    for_a = Event("parcel.sent", "2", workflow="parcel", business_key="a")
    for_b = Event("parcel.sent", "3", workflow="parcel", business_key="b")
    other_workflow_a = Event("x.sent", "4", workflow="other", business_key="a")
    by_id = Event("parcel.sent", "5", instance_id=uuid.uuid4())
    again_a = Event("parcel.delivered", "6", workflow="parcel", business_key="a")
    events = [(1, for_a), (2, for_b), (3, other_workflow_a), (4, by_id), (5, again_a)]
    alongside, after = apart_from_starts([(0, start_a)], events)
    assert alongside == [(2, for_b), (3, other_workflow_a), (4, by_id)]
    assert after == [(1, for_a), (5, again_a)]  # in their order
    assert apart_from_starts([], events) == (events, [])
