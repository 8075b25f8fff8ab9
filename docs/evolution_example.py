"""Order v2 and the migration of running v1 orders to it (tests/unit/test_readme_example.py)."""

from datetime import timedelta
from typing import Any

from docs.dsl_example import Cart, MiniOrder, PaymentCaptured, pays_in_full, record_payment, refund
from engine.dsl import RetryPolicy, State, Workflow, on
from engine.evolution import Migration


class CartV2(Cart):
    currency: str  # new in v2, and required


class MiniOrderV2(Workflow[CartV2]):
    """v2: a payment must match the total (no more review); 'paid' is now 'packing'."""

    name = "mini_order"
    version = 2
    data_schema = CartV2
    events = {"payment.captured": PaymentCaptured}
    start_event = "order.placed"

    placed = State("Waiting for payment", initial=True)
    packing = State("Being packed", sla=timedelta(hours=24))
    shipped = State(final=True)
    cancelled = State(final=True, on_enter=[refund])

    pay = placed.on("payment.captured").to(packing, guard=pays_in_full, action=record_payment)
    ship = packing.on("order.shipped").to(shipped, retry=RetryPolicy(attempts=5))
    cancel = on("order.cancelled", placed, packing).to(cancelled)
    expire = placed.after(timedelta(minutes=30), name="payment_timeout").to(cancelled)


class MiniOrderV1ToV2(Migration):
    """Paid orders are packing in v2; orders in review finish on v1."""

    source = MiniOrder
    target = MiniOrderV2
    states = {"paid": "packing"}  # placed maps to placed by name
    not_migratable = ("review",)

    @staticmethod
    def upgrade(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}  # every v1 order was in euros
