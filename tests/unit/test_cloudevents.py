"""The CloudEvents codec: both Kafka modes round-trip; bad messages fail with a reason."""

from __future__ import annotations

import orjson
import pytest

from engine.messaging.routing import Router, Unroutable
from engine.registry import Registry
from engine.wire.cloudevents import (
    STRUCTURED_CONTENT_TYPE,
    CloudEvent,
    InvalidMessage,
    decode,
    encode_binary,
    encode_structured,
)

EVENT = CloudEvent(
    id="e-1",
    source="shop/checkout",
    type="order.placed",
    subject="order-42",
    time="2026-01-02T03:04:05+00:00",
    data={"order_id": "order-42", "total": "10.00", "items": [1, 2]},
    extensions={"conveyorinstance": "0b8f7a52-2f3e-5c1d-8e1b-6c4a3d2e1f00"},
)


def test_structured_round_trip_keeps_every_attribute_and_extension() -> None:
    value, headers = encode_structured(EVENT)
    assert headers == [("content-type", STRUCTURED_CONTENT_TYPE.encode())]
    assert decode(value, headers) == EVENT


def test_binary_round_trip_puts_attributes_in_ce_headers_and_data_in_the_value() -> None:
    value, headers = encode_binary(EVENT)
    names = dict(headers)
    assert names["ce_id"] == b"e-1"
    assert names["ce_type"] == b"order.placed"
    assert names["ce_subject"] == b"order-42"
    assert names["ce_conveyorinstance"] == EVENT.extensions["conveyorinstance"].encode()
    assert orjson.loads(value) == EVENT.data
    assert decode(value, headers) == EVENT


def test_binary_headers_are_matched_case_insensitively() -> None:
    value, headers = encode_binary(EVENT)
    shouted = [(name.upper(), raw) for name, raw in headers]
    assert decode(value, shouted).type == "order.placed"


def test_structured_event_without_data_decodes_to_none() -> None:
    body = orjson.dumps({"specversion": "1.0", "id": "1", "source": "s", "type": "t"})
    assert decode(body, []).data is None


@pytest.mark.parametrize(
    ("value", "headers", "reason", "message"),
    [
        (b"\x00\xffnot json", [], "undecodable", "not valid JSON"),
        (b"", [], "undecodable", "empty message"),
        (b"[1, 2]", [], "undecodable", "must be a JSON object"),
        (
            orjson.dumps({"specversion": "1.0", "id": "1", "source": "s"}),
            [],
            "missing_attributes",
            "type",
        ),
        (
            orjson.dumps({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}),
            [],
            "undecodable",
            "specversion",
        ),
        (
            orjson.dumps({"specversion": "1.0", "id": 7, "source": "s", "type": "t"}),
            [],
            "undecodable",
            "must be a string",
        ),
        (
            orjson.dumps(
                {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "noon"}
            ),
            [],
            "undecodable",
            "RFC 3339",
        ),
        (b"{}", [("ce_id", b"1"), ("ce_type", b"t")], "missing_attributes", "source"),
        (
            b"{bad",
            [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"t")],
            "undecodable",
            "data is not valid JSON",
        ),
        (
            b"x",
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"1"),
                ("ce_source", b"s"),
                ("ce_type", b"t"),
                ("content-type", b"text/plain"),
            ],
            "undecodable",
            "content-type",
        ),
        (
            b"{}",
            [("ce_specversion", b"1.0"), ("ce_id", b"\xff"), ("ce_source", b"s")],
            "undecodable",
            "UTF-8",
        ),
    ],
)
def test_bad_messages_raise_invalid_message_with_a_reason(
    value: bytes, headers: list[tuple[str, bytes]], reason: str, message: str
) -> None:
    with pytest.raises(InvalidMessage, match=message) as caught:
        decode(value, headers)
    assert caught.value.reason == reason
    # The router dead-letters it with that reason and the message as the detail.
    routed = Router(Registry(), "conveyor").route_message("conveyor.in", None, value, headers)
    assert routed == Unroutable(reason, str(caught.value))
