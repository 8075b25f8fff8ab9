"""Testing the order workflow with the test kit (runs as tests/unit/test_testing_example.py)."""

from datetime import timedelta

from engine.testing import WorkflowEnvironment
from workflows.order import Order

ORDER = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "currency": "EUR",
    "items": [{"sku": "book", "quantity": 2, "unit_price": "10.00"}],
    "total": "20.00",
}
CAPTURED = {"payment_id": "p-1", "amount": "20.00", "currency": "EUR"}


async def test_an_order_left_unpacked_is_escalated() -> None:
    env = WorkflowEnvironment(Order)  # in memory: no database, no Kafka, a fake clock
    order = await env.start(Order, "o-1", ORDER)
    await order.expect_applied("payment.initiated", {"payment_id": "p-1", "provider": "card"})
    await order.expect_applied("payment.captured", CAPTURED, to="paid")

    fired = await env.advance(timedelta(hours=24))  # due timers fire, each at its time
    assert [f.name for f in fired] == ["packing_overdue"]
    assert order.state == "packing_escalated"
    assert order.data["escalated"] is True
    assert [e.type for e in order.events] == ["order.paid", "order.escalated"]

    # A refused event says why, and changes nothing.
    refused = await order.expect_rejected(
        "order.shipped", {"carrier": "dhl", "tracking_number": "t-1"}, reason="not_allowed"
    )
    assert refused.allowed_events == ("order.cancellation_requested", "order.packed")


async def test_cancelling_a_paid_order_asks_for_a_refund(
    workflow_env: WorkflowEnvironment,  # the pytest fixture: every workflow, a fresh clock
) -> None:
    order = await workflow_env.start(Order, "o-2", {**ORDER, "order_id": "o-2"})
    await order.send("payment.initiated", {"payment_id": "p-1", "provider": "card"})
    await order.send("payment.captured", CAPTURED)

    cancelled = await order.cancel(reason="out of stock")  # an operator's cancel

    assert (cancelled.transition, order.status) == ("operator_cancel_paid", "cancelled")
    (refund,) = workflow_env.commands
    assert (refund.type, refund.data["amount"]) == ("payment.refund_requested", "20.00")
