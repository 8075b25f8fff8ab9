"""``shop.order``: charge the customer, book a carrier, refund when no carrier will take
the parcel. Every step with another service is a command and the event that answers it.

    charging --payment.charged--> booking --carrier.booked--> shipped
       |                            |
       | payment.declined           | carrier.booking_requested.failed
       | payment.charge_requested.failed (the payment service kept failing)
       v                            v
    declined                     refunding --payment.refunded--> refunded
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from engine.dsl import ActionContext, State, Workflow


class Address(BaseModel):
    street: str = Field(min_length=1)
    city: str = Field(min_length=1)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class ShopOrder(BaseModel):
    order_id: str = Field(min_length=1)
    amount: Decimal = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    address: Address
    payment_id: str | None = None
    tracking_number: str | None = None
    refund_id: str | None = None
    problem: str | None = None


class Charged(BaseModel):
    payment_id: str = Field(min_length=1)


class Declined(BaseModel):
    reason: str


class Booked(BaseModel):
    tracking_number: str = Field(min_length=1)


class Refunded(BaseModel):
    refund_id: str = Field(min_length=1)


class CommandFailed(BaseModel):
    """What the client library's command worker sends when a handler kept failing."""

    command_id: str
    command_type: str
    error: str
    attempts: int


Ctx = ActionContext[ShopOrder, BaseModel]


def request_charge(ctx: Ctx) -> None:
    order = ctx.data
    ctx.command(
        "payment.charge_requested",
        {"order_id": order.order_id, "amount": str(order.amount), "currency": order.currency},
    )


def book_carrier(ctx: ActionContext[ShopOrder, Charged]) -> None:
    ctx.data.payment_id = ctx.payload.payment_id
    ctx.command(
        "carrier.booking_requested",
        {"order_id": ctx.data.order_id, "address": ctx.data.address.model_dump()},
    )


def record_shipment(ctx: ActionContext[ShopOrder, Booked]) -> None:
    ctx.data.tracking_number = ctx.payload.tracking_number


def record_decline(ctx: ActionContext[ShopOrder, Declined]) -> None:
    ctx.data.problem = f"payment declined: {ctx.payload.reason}"


def record_payment_failure(ctx: ActionContext[ShopOrder, CommandFailed]) -> None:
    ctx.data.problem = f"payment service failed: {ctx.payload.error}"


def refund(ctx: ActionContext[ShopOrder, CommandFailed]) -> None:
    ctx.data.problem = f"no carrier: {ctx.payload.error}"
    ctx.command(
        "payment.refund_requested",
        {
            "order_id": ctx.data.order_id,
            "payment_id": ctx.data.payment_id,
            "amount": str(ctx.data.amount),
            "currency": ctx.data.currency,
        },
    )


def record_refund(ctx: ActionContext[ShopOrder, Refunded]) -> None:
    ctx.data.refund_id = ctx.payload.refund_id


class ShopOrderWorkflow(Workflow[ShopOrder]):
    """A shop order: payment and carrier booking through the services that own them."""

    name = "shop.order"
    version = 1
    data_schema = ShopOrder
    events = {
        "payment.charged": Charged,
        "payment.declined": Declined,
        "payment.charge_requested.failed": CommandFailed,
        "carrier.booked": Booked,
        "carrier.booking_requested.failed": CommandFailed,
        "payment.refunded": Refunded,
    }

    charging = State("Waiting for the payment service", initial=True, on_enter=[request_charge])
    booking = State("Paid; waiting for a carrier")
    refunding = State("No carrier; waiting for the refund")
    shipped = State("Booked with a carrier", final=True)
    declined = State("Payment declined", cancelled=True)
    refunded = State("Refunded", cancelled=True)

    charged = charging.on("payment.charged").to(booking, action=book_carrier)
    decline = charging.on("payment.declined").to(declined, action=record_decline)
    payment_failed = charging.on("payment.charge_requested.failed").to(
        declined, action=record_payment_failure
    )
    booked = booking.on("carrier.booked").to(shipped, action=record_shipment)
    no_carrier = booking.on("carrier.booking_requested.failed").to(refunding, action=refund)
    refund_done = refunding.on("payment.refunded").to(refunded, action=record_refund)
