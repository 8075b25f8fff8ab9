"""The order lifecycle: payment, fulfilment, delivery, delivery failure (RTO) and returns."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, model_validator

from engine.dsl import ActionContext, GuardContext, OperatorCancel, State, Workflow, on, on_cancel

PAYMENT_TIMEOUT = timedelta(minutes=30)
PACKING_SLA = timedelta(hours=24)
RETURN_WINDOW = timedelta(days=7)
REVIEW_SLA = timedelta(hours=4)
DISPATCH_SLA = timedelta(hours=24)
DELIVERY_SLA = timedelta(hours=48)
REFUND_SLA = timedelta(days=3)
MAX_DELIVERY_ATTEMPTS = 3


# ---------------------------------------------------------------- data


class OrderItem(BaseModel):
    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0)
    unit_price: Decimal = Field(ge=0)


class PaymentInfo(BaseModel):
    payment_id: str
    provider: str
    captured_amount: Decimal | None = None


class ShipmentInfo(BaseModel):
    carrier: str
    tracking_number: str


class OrderData(BaseModel):
    """Instance data of an order."""

    order_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    items: list[OrderItem] = Field(min_length=1)
    total: Decimal = Field(ge=0)
    payment: PaymentInfo | None = None
    shipment: ShipmentInfo | None = None
    delivery_attempts: int = 0
    delivered_at: datetime | None = None
    cancellation_reason: str | None = None
    return_reason: str | None = None
    refund_requested: bool = False
    escalated: bool = False

    @model_validator(mode="after")
    def _total_matches_items(self) -> OrderData:
        expected = sum((i.unit_price * i.quantity for i in self.items), Decimal(0))
        if expected != self.total:
            raise ValueError(f"total {self.total} does not match the items ({expected})")
        return self


# ---------------------------------------------------------------- event payloads


class PaymentInitiated(BaseModel):
    payment_id: str = Field(min_length=1)
    provider: str = Field(min_length=1)


class PaymentCaptured(BaseModel):
    payment_id: str = Field(min_length=1)
    amount: Decimal = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class PaymentFailed(BaseModel):
    reason: str


class ReviewDecision(BaseModel):
    reviewer: str = Field(min_length=1)
    note: str = ""


class CancellationRequested(BaseModel):
    reason: str = Field(min_length=1)


class OrderShipped(BaseModel):
    carrier: str = Field(min_length=1)
    tracking_number: str = Field(min_length=1)


class DeliveryFailed(BaseModel):
    reason: str


class ReturnRequested(BaseModel):
    reason: str = Field(min_length=1)


# ---------------------------------------------------------------- guards, actions, hooks

Ctx = ActionContext[OrderData, Any]


def amount_matches(ctx: GuardContext[OrderData, PaymentCaptured]) -> bool:
    """The captured amount and currency equal the order total."""
    return ctx.payload.amount == ctx.data.total and ctx.payload.currency == ctx.data.currency


def delivery_attempts_left(ctx: GuardContext[OrderData, DeliveryFailed]) -> bool:
    """Another attempt is allowed after this failed one."""
    return ctx.data.delivery_attempts + 1 < MAX_DELIVERY_ATTEMPTS


async def record_payment_initiated(ctx: ActionContext[OrderData, PaymentInitiated]) -> None:
    ctx.data.payment = PaymentInfo(payment_id=ctx.payload.payment_id, provider=ctx.payload.provider)


async def record_capture(ctx: ActionContext[OrderData, PaymentCaptured]) -> None:
    provider = ctx.data.payment.provider if ctx.data.payment else "unknown"
    ctx.data.payment = PaymentInfo(
        payment_id=ctx.payload.payment_id, provider=provider, captured_amount=ctx.payload.amount
    )


async def flag_amount_mismatch(ctx: ActionContext[OrderData, PaymentCaptured]) -> None:
    await record_capture(ctx)
    ctx.emit(
        "order.payment_mismatch",
        {
            "order_id": ctx.data.order_id,
            "expected": str(ctx.data.total),
            "captured": str(ctx.payload.amount),
            "currency": ctx.payload.currency,
        },
    )


async def record_cancellation(ctx: ActionContext[OrderData, CancellationRequested]) -> None:
    ctx.data.cancellation_reason = ctx.payload.reason


def request_refund(ctx: Ctx) -> None:
    """Ask the payment service to refund what was captured (once per order)."""
    payment = ctx.data.payment
    if payment is None or payment.captured_amount is None or ctx.data.refund_requested:
        return
    ctx.data.refund_requested = True
    ctx.command(
        "payment.refund_requested",
        {
            "order_id": ctx.data.order_id,
            "payment_id": payment.payment_id,
            "amount": str(payment.captured_amount),
            "currency": ctx.data.currency,
        },
    )


async def record_operator_cancel(ctx: ActionContext[OrderData, OperatorCancel]) -> None:
    ctx.data.cancellation_reason = ctx.payload.reason or "cancelled by an operator"


async def operator_cancel_and_refund(ctx: ActionContext[OrderData, OperatorCancel]) -> None:
    await record_operator_cancel(ctx)
    request_refund(ctx)


async def cancel_and_refund(ctx: ActionContext[OrderData, CancellationRequested]) -> None:
    await record_cancellation(ctx)
    request_refund(ctx)


async def reject_captured_payment(ctx: ActionContext[OrderData, ReviewDecision]) -> None:
    ctx.data.cancellation_reason = f"payment rejected by {ctx.payload.reviewer}"
    request_refund(ctx)


async def record_payment_timeout(ctx: Ctx) -> None:
    ctx.data.cancellation_reason = "payment timeout"


async def record_payment_failure(ctx: ActionContext[OrderData, PaymentFailed]) -> None:
    ctx.data.cancellation_reason = f"payment failed: {ctx.payload.reason}"


async def escalate_packing(ctx: Ctx) -> None:
    ctx.data.escalated = True
    ctx.emit("order.escalated", {"order_id": ctx.data.order_id, "reason": "packing overdue"})


async def record_shipment(ctx: ActionContext[OrderData, OrderShipped]) -> None:
    ctx.data.shipment = ShipmentInfo(
        carrier=ctx.payload.carrier, tracking_number=ctx.payload.tracking_number
    )


async def schedule_reattempt(ctx: ActionContext[OrderData, DeliveryFailed]) -> None:
    ctx.data.delivery_attempts += 1
    ctx.emit(
        "delivery.reattempt_scheduled",
        {"order_id": ctx.data.order_id, "attempt": ctx.data.delivery_attempts + 1},
    )


async def start_return_to_origin(ctx: ActionContext[OrderData, DeliveryFailed]) -> None:
    ctx.data.delivery_attempts += 1
    ctx.emit("order.rto_initiated", {"order_id": ctx.data.order_id, "reason": ctx.payload.reason})


async def record_return_request(ctx: ActionContext[OrderData, ReturnRequested]) -> None:
    ctx.data.return_reason = ctx.payload.reason


async def announce_paid(ctx: Ctx) -> None:
    ctx.emit("order.paid", {"order_id": ctx.data.order_id, "total": str(ctx.data.total)})


async def announce_shipped(ctx: Ctx) -> None:
    shipment = ctx.data.shipment
    ctx.emit(
        "order.shipped",
        {
            "order_id": ctx.data.order_id,
            "carrier": shipment.carrier if shipment else None,
            "tracking_number": shipment.tracking_number if shipment else None,
        },
    )


async def mark_delivered(ctx: Ctx) -> None:
    ctx.data.delivered_at = ctx.now
    ctx.emit("order.delivered", {"order_id": ctx.data.order_id})


async def announce_cancelled(ctx: Ctx) -> None:
    ctx.emit(
        "order.cancelled",
        {"order_id": ctx.data.order_id, "reason": ctx.data.cancellation_reason},
    )


async def announce_refunded(ctx: Ctx) -> None:
    ctx.emit("order.refunded", {"order_id": ctx.data.order_id})


# ---------------------------------------------------------------- the workflow


class Order(Workflow[OrderData]):
    """An order from placement to delivery, cancellation, return to origin or refund."""

    name = "order"
    version = 1
    data_schema = OrderData
    start_event = "order.placed"
    events = {
        "payment.initiated": PaymentInitiated,
        "payment.captured": PaymentCaptured,
        "payment.failed": PaymentFailed,
        "payment.review_approved": ReviewDecision,
        "payment.review_rejected": ReviewDecision,
        "order.cancellation_requested": CancellationRequested,
        "order.shipped": OrderShipped,
        "delivery.failed": DeliveryFailed,
        "return.requested": ReturnRequested,
    }

    placed = State("Order accepted; waiting for the customer to pay", initial=True)
    payment_pending = State("Payment started; cancelled if not captured in 30 minutes")
    payment_review = State(
        "Captured amount differs from the total; a person decides", sla=REVIEW_SLA
    )
    paid = State(
        "Paid; the warehouse should pack within 24 hours",
        sla=PACKING_SLA,
        on_enter=[announce_paid],
    )
    packing_escalated = State("Packing is overdue; operations were alerted")
    packed = State("Packed and waiting for the carrier", sla=DISPATCH_SLA)
    shipped = State("Handed to the carrier", on_enter=[announce_shipped])
    out_for_delivery = State("With the courier for delivery", sla=DELIVERY_SLA)
    delivered = State("Delivered; returns accepted for 7 days", on_enter=[mark_delivered])
    return_requested = State("Customer asked to return the order")
    return_picked_up = State(
        "Return collected; refund requested", sla=REFUND_SLA, on_enter=[request_refund]
    )
    rto = State("Undeliverable; returning to origin")
    completed = State("Return window closed", final=True)
    refunded = State("Returned and refunded", final=True, on_enter=[announce_refunded])
    returned_to_warehouse = State("Back in the warehouse after failed delivery", final=True)
    cancelled = State("Cancelled before dispatch", cancelled=True, on_enter=[announce_cancelled])

    start_payment = placed.on("payment.initiated").to(
        payment_pending, action=record_payment_initiated
    )
    capture = payment_pending.on("payment.captured").to(
        paid, guard=amount_matches, action=record_capture
    ) | payment_pending.on("payment.captured").to(payment_review, action=flag_amount_mismatch)
    payment_failed = payment_pending.on("payment.failed").to(
        cancelled, action=record_payment_failure
    )
    payment_timeout = payment_pending.after(PAYMENT_TIMEOUT, name="payment_timeout").to(
        cancelled, action=record_payment_timeout
    )
    approve_payment = payment_review.on("payment.review_approved").to(paid)
    reject_payment = payment_review.on("payment.review_rejected").to(
        cancelled, action=reject_captured_payment
    )
    cancel_unpaid = on("order.cancellation_requested", placed, payment_pending).to(
        cancelled, action=record_cancellation
    )
    cancel_paid = on(
        "order.cancellation_requested", payment_review, paid, packing_escalated, packed
    ).to(cancelled, action=cancel_and_refund)
    # An operator's cancel (POST /v1/instances/{id}/cancel) before dispatch: a paid order
    # is refunded. Once shipped, an operator cancel only sets the status.
    operator_cancel_unpaid = on_cancel(placed, payment_pending).to(
        cancelled, action=record_operator_cancel
    )
    operator_cancel_paid = on_cancel(payment_review, paid, packing_escalated, packed).to(
        cancelled, action=operator_cancel_and_refund
    )
    packing_overdue = paid.after(PACKING_SLA, name="packing_overdue").to(
        packing_escalated, action=escalate_packing
    )
    pack = on("order.packed", paid, packing_escalated).to(packed)
    ship = packed.on("order.shipped").to(shipped, action=record_shipment)
    dispatch_courier = shipped.on("delivery.out_for_delivery").to(out_for_delivery)
    deliver = out_for_delivery.on("delivery.completed").to(delivered)
    delivery_failed = out_for_delivery.on("delivery.failed").to(
        out_for_delivery, guard=delivery_attempts_left, action=schedule_reattempt
    ) | out_for_delivery.on("delivery.failed").to(rto, action=start_return_to_origin)
    receive_rto = rto.on("rto.received").to(returned_to_warehouse, action=request_refund)
    close_return_window = delivered.after(RETURN_WINDOW, name="return_window").to(completed)
    request_return = delivered.on("return.requested").to(
        return_requested, action=record_return_request
    )
    pick_up_return = return_requested.on("return.picked_up").to(return_picked_up)
    refund = return_picked_up.on("payment.refunded").to(refunded)
