"""A tiny order workflow showing the Conveyor DSL (runs as tests/unit/test_readme_example.py)."""

from datetime import timedelta
from decimal import Decimal

from pydantic import BaseModel

from engine.dsl import ActionContext, GuardContext, RetryPolicy, State, Workflow, on


class Cart(BaseModel):  # instance data
    order_id: str
    total: Decimal
    paid: Decimal = Decimal(0)


class PaymentCaptured(BaseModel):  # payload of "payment.captured"
    amount: Decimal


def pays_in_full(ctx: GuardContext[Cart, PaymentCaptured]) -> bool:
    return ctx.payload.amount == ctx.data.total


async def record_payment(ctx: ActionContext[Cart, PaymentCaptured]) -> None:
    ctx.data.paid = ctx.payload.amount  # data is a mutable copy; changes are kept
    ctx.emit("order.paid", {"order_id": ctx.data.order_id})  # an outbound event


async def refund(ctx: ActionContext[Cart, BaseModel]) -> None:
    if ctx.data.paid:
        ctx.command("payment.refund_requested", {"amount": str(ctx.data.paid)})


class MiniOrder(Workflow[Cart]):
    """Pay within 30 minutes, then ship; cancellable until shipped."""

    name = "mini_order"
    version = 1
    data_schema = Cart
    events = {"payment.captured": PaymentCaptured}
    start_event = "order.placed"

    placed = State("Waiting for payment", initial=True)
    review = State("Amount differs from total")
    paid = State("Ready to ship")
    shipped = State(final=True)
    cancelled = State(final=True, on_enter=[refund])

    # Alternatives for one event: the first passing guard wins.
    pay = placed.on("payment.captured").to(
        paid, guard=pays_in_full, action=record_payment
    ) | placed.on("payment.captured").to(review)
    approve = review.on("review.approved").to(paid)
    ship = paid.on("order.shipped").to(shipped, retry=RetryPolicy(attempts=5))
    cancel = on("order.cancelled", placed, review, paid).to(cancelled)
    expire = placed.after(timedelta(minutes=30), name="payment_timeout").to(cancelled)
