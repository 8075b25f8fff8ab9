"""Warehouse inbound and outbound workflows: happy and failure paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from engine.decide import (
    Decision,
    EventTrigger,
    Rejection,
    Snapshot,
    TimerTrigger,
    Trigger,
    decide,
    initial_decision,
)
from engine.dsl import Workflow
from workflows.warehouse import Inbound, Outbound

NOW = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
ASN = {
    "asn_id": "asn-1",
    "vendor_id": "v-1",
    "warehouse_id": "wh-1",
    "expected": [{"sku": "tee", "quantity": 10}],
}
ALLOCATION = {
    "fulfilment_id": "f-1",
    "order_id": "o-1",
    "warehouse_id": "wh-1",
    "lines": [{"sku": "tee", "quantity": 2}],
}


async def run(
    definition: type[Workflow[Any]], data: dict[str, Any], *triggers: Trigger
) -> tuple[Snapshot, list[Decision]]:
    started = await initial_decision(definition, data, event_id="start", now=NOW)
    assert isinstance(started, Decision)
    snapshot = Snapshot(started.to_state, started.data, 1)
    decisions = []
    for trigger in triggers:
        result = await decide(definition, snapshot, trigger, NOW)
        assert isinstance(result, Decision), result
        decisions.append(result)
        snapshot = Snapshot(result.to_state, result.data, snapshot.revision + 1)
    return snapshot, decisions


def ev(type_: str, payload: dict[str, Any] | None = None) -> EventTrigger:
    return EventTrigger(f"id-{type_}", type_, payload or {}, source="kafka")


async def test_inbound_goods_pass_qc_and_are_stocked() -> None:
    snapshot, decisions = await run(
        Inbound,
        ASN,
        ev("receiving.started", {"dock_door": "D4"}),
        ev("receiving.completed", {"received": [{"sku": "tee", "quantity": 10}]}),
        ev("qc.passed"),
        ev("putaway.completed", {"location": "A-01-03"}),
    )
    assert snapshot.state == "stocked"
    assert snapshot.data["location"] == "A-01-03"
    assert decisions[-1].outbound[0].type == "inventory.stocked"
    assert decisions[-1].finished


async def test_inbound_quantity_mismatch_reports_a_discrepancy() -> None:
    _, decisions = await run(
        Inbound,
        ASN,
        ev("receiving.started", {"dock_door": "D4"}),
        ev("receiving.completed", {"received": [{"sku": "tee", "quantity": 8}]}),
    )
    assert [m.type for m in decisions[-1].outbound] == ["asn.discrepancy_found"]


async def test_inbound_failed_qc_returns_goods_to_vendor_or_writes_them_off() -> None:
    prefix = (
        ev("receiving.started", {"dock_door": "D4"}),
        ev("receiving.completed", {"received": [{"sku": "tee", "quantity": 10}]}),
    )
    back, decisions = await run(
        Inbound,
        ASN,
        *prefix,
        ev("qc.failed", {"reason": "wrong colour", "disposition": "return_to_vendor"}),
    )
    assert back.state == "returned_to_vendor"
    assert decisions[-1].outbound[0].kind == "command"
    damaged, decisions = await run(
        Inbound, ASN, *prefix, ev("qc.failed", {"reason": "wet", "disposition": "write_off"})
    )
    assert damaged.state == "damaged"
    assert decisions[-1].outbound[0].type == "inventory.written_off"


async def test_inbound_qc_reminder_repeats_while_checking() -> None:
    snapshot, decisions = await run(
        Inbound,
        ASN,
        ev("receiving.started", {"dock_door": "D4"}),
        ev("receiving.completed", {"received": [{"sku": "tee", "quantity": 10}]}),
        TimerTrigger("t1", "qc_reminder", "quality_check"),
    )
    assert snapshot.state == "quality_check"
    assert decisions[-1].timers_to_set[0].due_at == NOW + timedelta(hours=4)


async def test_inbound_rejects_an_unknown_qc_disposition() -> None:
    snapshot, _ = await run(
        Inbound,
        ASN,
        ev("receiving.started", {"dock_door": "D4"}),
        ev("receiving.completed", {"received": [{"sku": "tee", "quantity": 10}]}),
    )
    result = await decide(
        Inbound, snapshot, ev("qc.failed", {"reason": "x", "disposition": "?"}), NOW
    )
    assert isinstance(result, Rejection)
    assert [e.path for e in result.field_errors] == ["disposition"]


async def test_outbound_happy_path_dispatches() -> None:
    snapshot, decisions = await run(
        Outbound,
        ALLOCATION,
        ev("pick.started", {"picker_id": "p-7"}),
        ev("pick.completed"),
        ev("pack.started"),
        ev("pack.completed", {"weight_grams": 450}),
        ev("manifest.created", {"carrier": "dhl", "awb": "AWB1"}),
        ev("dispatch.confirmed"),
    )
    assert snapshot.state == "dispatched"
    assert decisions[-1].outbound[0].payload == {"order_id": "o-1", "carrier": "dhl", "awb": "AWB1"}


async def test_outbound_short_pick_reallocates_then_cancels_at_the_limit() -> None:
    short = ev("pick.short", {"missing": [{"sku": "tee", "quantity": 1}]})
    picker = ev("pick.started", {"picker_id": "p-7"})
    snapshot, decisions = await run(Outbound, ALLOCATION, picker, short)
    assert snapshot.state == "allocated"
    assert decisions[-1].outbound[0].type == "inventory.reallocate"
    snapshot, decisions = await run(
        Outbound, ALLOCATION, picker, short, picker, short, picker, short
    )
    assert snapshot.state == "cancelled"
    assert snapshot.data["reallocations"] == 2
    assert decisions[-1].outbound[0].type == "fulfilment.cancelled"


async def test_outbound_cannot_be_cancelled_once_manifested() -> None:
    snapshot, _ = await run(
        Outbound,
        ALLOCATION,
        ev("pick.started", {"picker_id": "p-7"}),
        ev("pick.completed"),
        ev("pack.started"),
        ev("pack.completed", {"weight_grams": 450}),
        ev("manifest.created", {"carrier": "dhl", "awb": "AWB1"}),
    )
    result = await decide(Outbound, snapshot, ev("allocation.cancelled", {"reason": "x"}), NOW)
    assert isinstance(result, Rejection)
    assert result.reason == "not_allowed"
    assert result.allowed_events == ("dispatch.confirmed",)
