"""Describing workflows as JSON and as Mermaid diagrams."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from engine.introspect import describe, format_delay, mermaid
from workflows.order import Order


def test_description_is_json_serialisable() -> None:
    json.dumps(describe(Order))


def test_description_lists_states_transitions_and_timers() -> None:
    doc = describe(Order)
    assert (doc["name"], doc["version"], doc["start_event"]) == ("order", 1, "order.placed")
    states = {s["name"]: s for s in doc["states"]}
    assert states["placed"]["initial"]
    assert states["delivered"]["timers"] == ["return_window"]
    assert states["cancelled"]["final"]
    capture = [t for t in doc["transitions"] if t["name"] == "capture"]
    assert [(t["to"], t["guarded"], t["has_action"]) for t in capture] == [
        ("paid", True, True),
        ("payment_review", False, True),
    ]
    timers = {t["name"]: t["delay_seconds"] for t in doc["timers"]}
    assert timers == {"payment_timeout": 1800, "packing_overdue": 86400, "return_window": 604800}


def test_description_has_payload_and_data_json_schemas() -> None:
    doc = describe(Order)
    captured = doc["events"]["payment.captured"]["payload_schema"]
    assert set(captured["required"]) == {"payment_id", "amount", "currency"}
    assert doc["events"]["order.packed"]["payload_schema"]["type"] == "object"
    assert "items" in doc["data_schema"]["properties"]


def test_mermaid_draws_initial_final_and_labelled_edges() -> None:
    text = mermaid(Order)
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> placed" in lines
    assert "    payment_pending --> paid : payment.captured if amount_matches" in lines
    assert "    payment_pending --> cancelled : after 30m" in lines
    assert "    delivered --> completed : after 7d" in lines
    assert "    refunded --> [*]" in lines
    assert "classDef" not in text


def test_mermaid_highlights_the_given_state() -> None:
    text = mermaid(Order, highlight="paid")
    assert "    class paid current" in text
    assert "classDef current" in text


def test_mermaid_draws_visited_states_apart_from_the_current_one() -> None:
    text = mermaid(Order, highlight="paid", visited=["placed", "payment_pending", "paid"])
    lines = text.splitlines()
    assert "    class placed,payment_pending visited" in lines
    assert "    class paid current" in lines
    assert any(line.startswith("    classDef visited ") for line in lines)
    # The current state's style comes last: it wins where both would apply.
    assert lines.index("    class paid current") > lines.index(
        "    class placed,payment_pending visited"
    )
    assert "visited" not in mermaid(Order, highlight="placed", visited=["placed"])


def test_mermaid_rejects_an_unknown_visited_state() -> None:
    with pytest.raises(ValueError, match="ghost"):
        mermaid(Order, visited=["placed", "ghost"])


def test_mermaid_rejects_highlighting_an_unknown_state() -> None:
    with pytest.raises(ValueError, match="ghost"):
        mermaid(Order, highlight="ghost")


def test_delays_format_compactly() -> None:
    assert format_delay(timedelta(minutes=90)) == "1h30m"
    assert format_delay(timedelta(seconds=45)) == "45s"
