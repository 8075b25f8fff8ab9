"""Operator queries and the business cancel, on the runtime over the real PostgreSQL.

SLAs and time in state move with the (fake) clock; data filters use JSONB containment;
an operator's cancel runs the workflow's cancel route (a paid order is refunded) and
``status=cancelled`` finds every cancelled order, however it was cancelled.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import operations
from engine.dsl import ActionContext, GuardContext, OperatorCancel, State, Workflow, on_cancel
from engine.errors import CancelFailed, InstanceNotFound, InvalidState, PayloadInvalid
from engine.model import Instance, InstanceStatus
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.queries import InstanceFilter
from tests.integration.test_runtime import FakeClock, ev, order_data, registry, rows

PAID = {"payment_id": "P-1", "amount": "10", "currency": "EUR"}


async def paid_order(runtime: Runtime, order_id: str, **data: Any) -> Instance:
    started = await runtime.start("order", order_id, {**order_data(order_id), **data})
    instance = started.instance
    await runtime.send(ev(instance.id, "payment.initiated", {"payment_id": "P-1", "provider": "x"}))
    outcome = await runtime.send(ev(instance.id, "payment.captured", PAID))
    assert outcome.to_state == "paid"
    return await runtime.get(instance.id)


async def keys_of(runtime: Runtime, filters: InstanceFilter) -> set[str]:
    page = await runtime.list_instances(filters, limit=500)
    return {i.business_key for i in page.items}


async def test_sla_breach_is_found_once_the_clock_passes_it(
    runtime: Runtime, clock: FakeClock
) -> None:
    paid = await paid_order(runtime, "SLA-1")
    await runtime.start("order", "SLA-2", order_data("SLA-2"))  # placed: no SLA
    shown = runtime.instance_json(paid)
    assert shown["sla_due_at"] == (paid.state_entered_at + timedelta(hours=24)).isoformat()
    assert shown["sla_breached"] is False
    late = InstanceFilter(workflow="order", sla_breached=True)
    assert await keys_of(runtime, late) == set()
    assert await keys_of(runtime, InstanceFilter(sla_breached=False)) == {"SLA-1", "SLA-2"}

    clock.advance(timedelta(hours=24, seconds=1))
    assert await keys_of(runtime, late) == {"SLA-1"}
    assert await keys_of(runtime, InstanceFilter(sla_breached=False)) == {"SLA-2"}
    assert runtime.instance_json(await runtime.get(paid.id))["sla_breached"] is True
    # Leaving the state ends the breach; the next state's SLA counts from then.
    await runtime.send(ev(paid.id, "order.packed"))
    assert await keys_of(runtime, late) == set()
    packed = runtime.instance_json(await runtime.get(paid.id))
    assert (packed["state"], packed["sla_breached"]) == ("packed", False)


async def test_time_in_state_keeps_an_sla_filter_beside_it(
    runtime: Runtime, clock: FakeClock
) -> None:
    await paid_order(runtime, "W-1")  # paid: a 24 h SLA
    await runtime.start("order", "W-2", order_data("W-2"))  # placed: no SLA
    clock.advance(timedelta(hours=25))
    aged = timedelta(hours=2)
    assert await keys_of(runtime, InstanceFilter(in_state_longer_than=aged)) == {"W-1", "W-2"}
    within = InstanceFilter(in_state_longer_than=aged, sla_breached=False)
    assert await keys_of(runtime, within) == {"W-2"}
    late = InstanceFilter(in_state_longer_than=aged, sla_breached=True)
    assert await keys_of(runtime, late) == {"W-1"}


async def test_a_status_only_cancel_needs_no_deployed_version(
    db: AsyncEngine, settings: Settings, clock: FakeClock
) -> None:
    old = Runtime(db, registry(), topic_prefix=settings.topic_prefix, clock=clock)
    instance = (await old.start("order", "V-1", order_data("V-1"))).instance
    # A process that no longer deploys the order workflow at all.
    newer = Runtime(db, registry(BrokenCancel), topic_prefix=settings.topic_prefix, clock=clock)
    cancelled = await operations.cancel(newer, instance.id, reason="retired version")
    assert (cancelled.mode, cancelled.instance.status) == ("status", InstanceStatus.CANCELLED)


async def test_time_in_state_counts_running_instances_only(
    runtime: Runtime, clock: FakeClock
) -> None:
    await runtime.start("order", "AGE-1", order_data("AGE-1"))
    ended = (await runtime.start("order", "AGE-2", order_data("AGE-2"))).instance
    await runtime.send(ev(ended.id, "order.cancellation_requested", {"reason": "changed mind"}))
    clock.advance(timedelta(hours=3))
    await runtime.start("order", "AGE-3", order_data("AGE-3"))
    two_hours = InstanceFilter(in_state_longer_than=timedelta(hours=2))
    assert await keys_of(runtime, two_hours) == {"AGE-1"}
    assert await keys_of(runtime, InstanceFilter(in_state_longer_than=timedelta(hours=4))) == set()


async def test_business_data_filters_match_by_containment(runtime: Runtime) -> None:
    await runtime.start("order", "D-1", {**order_data("D-1"), "customer_id": "C-7"})
    await runtime.start("order", "D-2", {**order_data("D-2"), "customer_id": "C-8"})
    await paid_order(runtime, "D-3", customer_id="C-7")
    c7 = InstanceFilter(workflow="order", data={"customer_id": "C-7"})
    assert await keys_of(runtime, c7) == {"D-1", "D-3"}
    nested = InstanceFilter(workflow="order", data={"payment": {"payment_id": "P-1"}})
    assert await keys_of(runtime, nested) == {"D-3"}
    both = InstanceFilter(data={"customer_id": "C-7"}, state="placed")
    assert await keys_of(runtime, both) == {"D-1"}
    assert await keys_of(runtime, InstanceFilter(data={"customer_id": "C-9"})) == set()


async def test_operator_cancel_of_a_paid_order_requests_the_refund(
    runtime: Runtime, db: AsyncEngine, settings: Settings
) -> None:
    paid = await paid_order(runtime, "CX-1")
    cancelled = await operations.cancel(
        runtime, paid.id, reason="fraud suspected", request_id="req-42"
    )
    assert (cancelled.mode, cancelled.transition) == ("transition", "operator_cancel_paid")
    instance = cancelled.instance
    assert (instance.state, instance.status) == ("cancelled", InstanceStatus.CANCELLED)
    assert instance.data["cancellation_reason"] == "fraud suspected"
    assert instance.data["refund_requested"] is True
    commands = await rows(
        db, "select value from outbox where topic = :t", t=f"{settings.topic_prefix}.commands"
    )
    refunds = [orjson.loads(v) for (v,) in commands]
    assert [r["type"] for r in refunds] == ["payment.refund_requested"]
    assert refunds[0]["data"]["amount"] == "10"
    assert await rows(db, "select 1 from timers where instance_id = :i", i=paid.id) == []
    history = await runtime.history(paid.id)
    last = history[-1]
    assert (last.event_type, last.source, last.transition, last.request_id) == (
        "conveyor.cancel",
        "operator",
        "operator_cancel_paid",
        "req-42",
    )
    # Cancelling again changes nothing and requests no second refund.
    again = await operations.cancel(runtime, paid.id, reason="twice")
    assert again.mode == "already"
    assert len(await rows(db, "select 1 from outbox where topic like '%.commands'")) == 1


async def test_status_cancelled_finds_every_cancelled_order(runtime: Runtime) -> None:
    by_customer = (await runtime.start("order", "K-1", order_data("K-1"))).instance
    outcome = await runtime.send(
        ev(by_customer.id, "order.cancellation_requested", {"reason": "changed mind"})
    )
    assert (outcome.to_state, outcome.instance and outcome.instance.status) == (
        "cancelled",
        InstanceStatus.CANCELLED,
    )
    placed = (await runtime.start("order", "K-2", order_data("K-2"))).instance
    assert (await operations.cancel(runtime, placed.id)).mode == "transition"
    shipped = await paid_order(runtime, "K-3")
    await runtime.send(ev(shipped.id, "order.packed"))
    await runtime.send(ev(shipped.id, "order.shipped", {"carrier": "c", "tracking_number": "t"}))
    status_only = await operations.cancel(runtime, shipped.id, reason="lost")
    assert (status_only.mode, status_only.instance.state) == ("status", "shipped")
    forced = await paid_order(runtime, "K-4")
    kept = await operations.cancel(runtime, forced.id, status_only=True)
    assert (kept.mode, kept.instance.state, kept.instance.data["refund_requested"]) == (
        "status",
        "paid",
        False,
    )
    await runtime.start("order", "K-5", order_data("K-5"))
    cancelled = InstanceFilter(status=InstanceStatus.CANCELLED)
    assert await keys_of(runtime, cancelled) == {"K-1", "K-2", "K-3", "K-4"}


class Flaky(BaseModel):
    note: str = ""


def refuse(ctx: ActionContext[Flaky, OperatorCancel]) -> None:
    raise RuntimeError("refund service misconfigured")


class BrokenCancel(Workflow[Flaky]):
    name = "test.broken_cancel"
    data_schema = Flaky

    open = State(initial=True, sla=timedelta(minutes=5))
    void = State(cancelled=True)

    operator_cancel = on_cancel(open).to(void, action=refuse)


async def test_a_cancel_route_that_raises_cancels_nothing(
    db: AsyncEngine, settings: Settings, clock: FakeClock
) -> None:
    runtime = Runtime(db, registry(BrokenCancel), topic_prefix=settings.topic_prefix, clock=clock)
    instance = (await runtime.start("test.broken_cancel", "B-1", {})).instance
    with pytest.raises(CancelFailed, match="refund service misconfigured"):
        await operations.cancel(runtime, instance.id, reason="x")
    unchanged = await runtime.get(instance.id)
    assert (unchanged.status, unchanged.state, unchanged.revision) == (
        InstanceStatus.ACTIVE,
        "open",
        instance.revision,
    )
    forced = await operations.cancel(runtime, instance.id, status_only=True)
    assert (forced.mode, forced.instance.status) == ("status", InstanceStatus.CANCELLED)


async def test_cancel_of_a_missing_instance_is_not_found(runtime: Runtime) -> None:
    with pytest.raises(InstanceNotFound):
        await operations.cancel(runtime, uuid.uuid4())


def cancellable(ctx: GuardContext[Flaky, OperatorCancel]) -> bool:
    return ctx.data.note == "cancellable"


class GuardedCancel(Workflow[Flaky]):
    name = "test.guarded_cancel"
    data_schema = Flaky

    open = State(initial=True)
    void = State(cancelled=True)

    operator_cancel = on_cancel(open).to(void, guard=cancellable)


async def test_a_cancel_route_whose_guard_refuses_falls_back_to_the_status(
    db: AsyncEngine, settings: Settings, clock: FakeClock
) -> None:
    runtime = Runtime(db, registry(GuardedCancel), topic_prefix=settings.topic_prefix, clock=clock)
    refused = (await runtime.start("test.guarded_cancel", "G-1", {})).instance
    allowed = (await runtime.start("test.guarded_cancel", "G-2", {"note": "cancellable"})).instance
    by_status = await operations.cancel(runtime, refused.id, reason="x")
    assert (by_status.mode, by_status.instance.state) == ("status", "open")
    assert by_status.instance.status is InstanceStatus.CANCELLED
    outcomes = [h.outcome for h in await runtime.history(refused.id)]
    assert outcomes[-1] == "cancelled"
    by_route = await operations.cancel(runtime, allowed.id, reason="x")
    assert (by_route.mode, by_route.instance.state) == ("transition", "void")


async def test_a_move_sets_the_new_state_timers_from_now_and_records_it(
    runtime: Runtime, db: AsyncEngine, clock: FakeClock
) -> None:
    paid = await paid_order(runtime, "M-1")
    assert await rows(db, "select name from timers where instance_id = :i", i=paid.id) == [
        ("packing_overdue",)
    ]
    clock.advance(timedelta(hours=1))
    moved = await operations.move(
        runtime, paid.id, state="payment_pending", reason="capture reversed", request_id="r-9"
    )
    assert (moved.state, moved.status, moved.state_entered_at) == (
        "payment_pending",
        InstanceStatus.ACTIVE,
        clock.now,
    )
    due = await rows(db, "select name, due_at from timers where instance_id = :i", i=paid.id)
    assert due == [("payment_timeout", clock.now + timedelta(minutes=30))]
    last = (await runtime.history(paid.id))[-1]
    assert (last.event_type, last.outcome, last.from_state, last.to_state, last.request_id) == (
        "conveyor.move",
        "moved",
        "paid",
        "payment_pending",
        "r-9",
    )
    # Events now follow the new state: the payment can be captured again.
    outcome = await runtime.send(ev(paid.id, "payment.captured", PAID))
    assert outcome.to_state == "paid"


async def test_a_move_into_a_final_state_ends_the_instance_and_bad_moves_are_refused(
    runtime: Runtime, db: AsyncEngine
) -> None:
    order = (await runtime.start("order", "M-2", order_data("M-2"))).instance
    with pytest.raises(PayloadInvalid):
        await operations.move(runtime, order.id, state="limbo")
    ended = await operations.move(runtime, order.id, state="cancelled", reason="duplicate")
    assert (ended.state, ended.status) == ("cancelled", InstanceStatus.CANCELLED)
    assert await rows(db, "select 1 from timers where instance_id = :i", i=order.id) == []
    with pytest.raises(InvalidState, match="ended"):
        await operations.move(runtime, order.id, state="placed")
    with pytest.raises(InstanceNotFound):
        await operations.move(runtime, uuid.uuid4(), state="placed")
