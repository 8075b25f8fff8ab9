"""The order workflow, driven through happy and failure paths, plus property tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

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
from workflows.order import Order

T0 = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
ORDER = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "currency": "EUR",
    "items": [
        {"sku": "tee", "quantity": 2, "unit_price": "15.00"},
        {"sku": "cap", "quantity": 1, "unit_price": "10.00"},
    ],
    "total": "40.00",
}
CAPTURED = {"payment_id": "p-1", "amount": "40.00", "currency": "EUR"}


async def start() -> Snapshot:
    decision = await initial_decision(Order, ORDER, event_id="start", now=T0)
    assert isinstance(decision, Decision)
    return Snapshot(decision.to_state, decision.data, 1)


async def apply(
    snapshot: Snapshot, trigger: Trigger, now: datetime = T0
) -> tuple[Snapshot, Decision]:
    result = await decide(Order, snapshot, trigger, now)
    assert isinstance(result, Decision), result
    return Snapshot(result.to_state, result.data, snapshot.revision + 1), result


def ev(type_: str, payload: dict[str, Any] | None = None) -> EventTrigger:
    return EventTrigger(f"id-{type_}", type_, payload or {})


async def paid_order() -> Snapshot:
    snapshot = await start()
    snapshot, _ = await apply(
        snapshot, ev("payment.initiated", {"payment_id": "p-1", "provider": "card"})
    )
    snapshot, _ = await apply(snapshot, ev("payment.captured", CAPTURED))
    return snapshot


async def delivered_order() -> Snapshot:
    snapshot = await paid_order()
    for trigger in (
        ev("order.packed"),
        ev("order.shipped", {"carrier": "dhl", "tracking_number": "T1"}),
        ev("delivery.out_for_delivery"),
        ev("delivery.completed"),
    ):
        snapshot, _ = await apply(snapshot, trigger)
    return snapshot


async def test_starting_an_order_rejects_a_total_that_does_not_match_items() -> None:
    result = await initial_decision(Order, {**ORDER, "total": "1.00"}, event_id="s", now=T0)
    assert isinstance(result, Rejection)
    assert result.reason == "invalid_payload"


async def test_happy_path_reaches_delivered_and_closes_the_return_window() -> None:
    snapshot = await delivered_order()
    assert snapshot.state == "delivered"
    assert snapshot.data["delivered_at"] is not None
    assert snapshot.data["shipment"] == {"carrier": "dhl", "tracking_number": "T1"}
    closed = TimerTrigger("t", "return_window", "delivered")
    snapshot, decision = await apply(snapshot, closed, T0 + timedelta(days=7))
    assert snapshot.state == "completed"
    assert decision.finished


async def test_capture_matching_the_total_pays_and_announces() -> None:
    snapshot = await start()
    snapshot, decision = await apply(
        snapshot, ev("payment.initiated", {"payment_id": "p-1", "provider": "card"})
    )
    assert [t.name for t in decision.timers_to_set] == ["payment_timeout"]
    snapshot, decision = await apply(snapshot, ev("payment.captured", CAPTURED))
    assert snapshot.state == "paid"
    assert [m.type for m in decision.outbound] == ["order.paid"]
    assert decision.timers_to_cancel == ("payment_timeout",)
    assert decision.timers_to_set[0].due_at == T0 + timedelta(hours=24)


async def test_capture_with_a_different_amount_goes_to_payment_review() -> None:
    snapshot = await start()
    snapshot, _ = await apply(
        snapshot, ev("payment.initiated", {"payment_id": "p-1", "provider": "card"})
    )
    snapshot, decision = await apply(
        snapshot, ev("payment.captured", {**CAPTURED, "amount": "39.00"})
    )
    assert snapshot.state == "payment_review"
    assert [m.type for m in decision.outbound] == ["order.payment_mismatch"]
    snapshot, decision = await apply(snapshot, ev("payment.review_rejected", {"reviewer": "ana"}))
    assert snapshot.state == "cancelled"
    assert [m.type for m in decision.outbound] == ["payment.refund_requested", "order.cancelled"]
    assert decision.outbound[0].payload["amount"] == "39.00"


async def test_payment_timeout_cancels_the_order() -> None:
    snapshot = await start()
    snapshot, _ = await apply(
        snapshot, ev("payment.initiated", {"payment_id": "p-1", "provider": "card"})
    )
    timeout = TimerTrigger("t", "payment_timeout", "payment_pending")
    snapshot, decision = await apply(snapshot, timeout, T0 + timedelta(minutes=30))
    assert snapshot.state == "cancelled"
    assert snapshot.data["cancellation_reason"] == "payment timeout"
    assert decision.outbound[0].type == "order.cancelled"


async def test_cancelling_before_payment_requests_no_refund() -> None:
    snapshot, decision = await apply(
        await start(), ev("order.cancellation_requested", {"reason": "changed mind"})
    )
    assert snapshot.state == "cancelled"
    assert [m.type for m in decision.outbound] == ["order.cancelled"]


async def test_cancelling_a_paid_order_requests_a_refund_command() -> None:
    snapshot, decision = await apply(
        await paid_order(), ev("order.cancellation_requested", {"reason": "too slow"})
    )
    assert snapshot.state == "cancelled"
    refund = decision.outbound[0]
    assert (refund.kind, refund.type) == ("command", "payment.refund_requested")
    assert refund.payload == {
        "order_id": "o-1",
        "payment_id": "p-1",
        "amount": "40.00",
        "currency": "EUR",
    }


async def test_cancelling_after_dispatch_is_not_allowed() -> None:
    snapshot = await paid_order()
    snapshot, _ = await apply(snapshot, ev("order.packed"))
    snapshot, _ = await apply(
        snapshot, ev("order.shipped", {"carrier": "dhl", "tracking_number": "T1"})
    )
    result = await decide(Order, snapshot, ev("order.cancellation_requested", {"reason": "x"}), T0)
    assert isinstance(result, Rejection)
    assert result.reason == "not_allowed"
    assert result.message.startswith(
        "order v1: can't apply 'order.cancellation_requested' in state 'shipped'"
    )


async def test_packing_overdue_escalates_and_packing_still_completes() -> None:
    overdue = TimerTrigger("t", "packing_overdue", "paid")
    snapshot, decision = await apply(await paid_order(), overdue, T0 + timedelta(hours=24))
    assert snapshot.state == "packing_escalated"
    assert [m.type for m in decision.outbound] == ["order.escalated"]
    snapshot, _ = await apply(snapshot, ev("order.packed"))
    assert snapshot.state == "packed"


async def test_failed_deliveries_retry_then_return_to_origin() -> None:
    snapshot = await paid_order()
    for trigger in (
        ev("order.packed"),
        ev("order.shipped", {"carrier": "dhl", "tracking_number": "T1"}),
        ev("delivery.out_for_delivery"),
    ):
        snapshot, _ = await apply(snapshot, trigger)
    failed = ev("delivery.failed", {"reason": "nobody home"})
    snapshot, decision = await apply(snapshot, failed)
    assert snapshot.state == "out_for_delivery"
    assert decision.outbound[0].type == "delivery.reattempt_scheduled"
    snapshot, _ = await apply(snapshot, failed)
    snapshot, decision = await apply(snapshot, failed)
    assert snapshot.state == "rto"
    assert snapshot.data["delivery_attempts"] == 3
    snapshot, decision = await apply(snapshot, ev("rto.received"))
    assert snapshot.state == "returned_to_warehouse"
    assert [m.type for m in decision.outbound] == ["payment.refund_requested"]


async def test_return_within_the_window_ends_refunded() -> None:
    snapshot = await delivered_order()
    snapshot, _ = await apply(snapshot, ev("return.requested", {"reason": "too small"}))
    snapshot, decision = await apply(snapshot, ev("return.picked_up"))
    assert snapshot.state == "return_picked_up"
    assert [m.type for m in decision.outbound] == ["payment.refund_requested"]
    snapshot, decision = await apply(snapshot, ev("payment.refunded"))
    assert snapshot.state == "refunded"
    assert decision.finished


async def test_return_after_the_window_closed_is_rejected_as_finished() -> None:
    closed = TimerTrigger("t", "return_window", "delivered")
    snapshot, _ = await apply(await delivered_order(), closed)
    result = await decide(Order, snapshot, ev("return.requested", {"reason": "late"}), T0)
    assert isinstance(result, Rejection)
    assert result.reason == "finished"


async def test_invalid_capture_payload_names_the_fields() -> None:
    snapshot = await start()
    snapshot, _ = await apply(
        snapshot, ev("payment.initiated", {"payment_id": "p-1", "provider": "card"})
    )
    result = await decide(Order, snapshot, ev("payment.captured", {"amount": "x"}), T0)
    assert isinstance(result, Rejection)
    assert {e.path for e in result.field_errors} == {"payment_id", "amount", "currency"}


# ---------------------------------------------------------------- properties

VALID_TRIGGERS: list[Trigger] = [
    ev("payment.initiated", {"payment_id": "p-1", "provider": "card"}),
    ev("payment.captured", CAPTURED),
    ev("payment.captured", {**CAPTURED, "amount": "1.00"}),
    ev("payment.failed", {"reason": "declined"}),
    ev("payment.review_approved", {"reviewer": "ana"}),
    ev("payment.review_rejected", {"reviewer": "ana"}),
    ev("order.cancellation_requested", {"reason": "changed mind"}),
    ev("order.packed"),
    ev("order.shipped", {"carrier": "dhl", "tracking_number": "T1"}),
    ev("delivery.out_for_delivery"),
    ev("delivery.completed"),
    ev("delivery.failed", {"reason": "nobody home"}),
    ev("rto.received"),
    ev("return.requested", {"reason": "too small"}),
    ev("return.picked_up"),
    ev("payment.refunded"),
    TimerTrigger("t", "payment_timeout", "payment_pending"),
    TimerTrigger("t", "packing_overdue", "paid"),
    TimerTrigger("t", "return_window", "delivered"),
    TimerTrigger("t", "return_window", "payment_pending"),
]


async def run_sequence(
    triggers: list[Trigger],
) -> tuple[Snapshot, list[Decision | Rejection], int]:
    snapshot = await start()
    results: list[Decision | Rejection] = []
    accepted = 0
    for index, trigger in enumerate(triggers):
        was_final = snapshot.state in Order.spec.finals
        result = await decide(Order, snapshot, trigger, T0 + timedelta(minutes=index))
        results.append(result)
        if isinstance(result, Decision):
            assert not was_final, "left a final state"
            assert result.to_state in Order.spec.states
            assert result.history.to_state == result.to_state
            accepted += 1
            snapshot = Snapshot(result.to_state, result.data, snapshot.revision + 1)
        else:
            assert result.state == snapshot.state
    return snapshot, results, accepted


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(VALID_TRIGGERS), max_size=25))
async def test_random_sequences_never_leave_final_or_reach_undeclared_states(
    triggers: list[Trigger],
) -> None:
    snapshot, results, accepted = await run_sequence(triggers)
    histories = [r.history for r in results if isinstance(r, Decision)]
    assert len(histories) == accepted
    assert snapshot.state in Order.spec.states


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(VALID_TRIGGERS), max_size=15))
async def test_same_inputs_give_equal_decisions(triggers: list[Trigger]) -> None:
    first = await run_sequence(triggers)
    second = await run_sequence(triggers)
    assert first == second
