"""``test.parcel`` v1 and v2 and the migration between them (tests of workflow evolution).

v2 renames ``packing`` to ``picking`` (escalated after 48 hours), drops
``manual_review``, needs a ``currency`` in its data, and refuses payments under 10: an
instance paid less than that under v1 diverges when replayed on v2.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from engine.dsl import ActionContext, GuardContext, RetryPolicy, State, Workflow
from engine.evolution import Migration

PAYMENT_TIMEOUT = timedelta(minutes=30)
ESCALATION = timedelta(hours=48)
MINIMUM_PAYMENT = 10


class ParcelData(BaseModel):
    key: str
    amount: int = 0
    carrier: str | None = None


class ParcelDataV2(ParcelData):
    currency: str


class Captured(BaseModel):
    amount: int


class Shipped(BaseModel):
    carrier: str


class Empty(BaseModel):
    pass


async def record_payment(ctx: ActionContext[Any, Captured]) -> None:
    ctx.data.amount = ctx.payload.amount


async def record_carrier(ctx: ActionContext[Any, Shipped]) -> None:
    ctx.data.carrier = ctx.payload.carrier


async def record_carrier_v1(ctx: ActionContext[Any, Shipped]) -> None:
    if ctx.payload.carrier == "OLDPOST":  # v1's bug, fixed in v2
        raise RuntimeError("carrier OLDPOST is not supported")
    ctx.data.carrier = ctx.payload.carrier


def enough(ctx: GuardContext[Any, Captured]) -> bool:
    return ctx.payload.amount >= MINIMUM_PAYMENT


class ParcelV1(Workflow[ParcelData]):
    name = "test.parcel"
    version = 1
    data_schema = ParcelData
    events = {"parcel.paid": Captured, "parcel.shipped": Shipped}

    placed = State(initial=True)
    paid = State()
    packing = State(sla=timedelta(hours=24))
    manual_review = State()
    shipped = State()
    delivered = State(final=True)
    cancelled = State(final=True, cancelled=True)

    pay = placed.on("parcel.paid").to(paid, action=record_payment)
    flag = placed.on("parcel.flagged").to(manual_review)
    clear = manual_review.on("parcel.cleared").to(paid)
    pack = paid.on("parcel.packing").to(packing)
    ship = packing.on("parcel.shipped").to(
        shipped, action=record_carrier_v1, retry=RetryPolicy(attempts=1)
    )
    deliver = shipped.on("parcel.delivered").to(delivered)
    expire = placed.after(PAYMENT_TIMEOUT, name="payment_timeout").to(cancelled)


class ParcelV2(Workflow[ParcelDataV2]):
    name = "test.parcel"
    version = 2
    data_schema = ParcelDataV2
    events = {"parcel.paid": Captured, "parcel.shipped": Shipped}

    placed = State(initial=True)
    paid = State()
    picking = State(sla=timedelta(hours=24))
    escalated = State()
    shipped = State()
    delivered = State(final=True)
    cancelled = State(final=True, cancelled=True)

    pay = placed.on("parcel.paid").to(paid, guard=enough, action=record_payment)
    pick = paid.on("parcel.packing").to(picking)
    ship = picking.on("parcel.shipped").to(shipped, action=record_carrier)
    deliver = shipped.on("parcel.delivered").to(delivered)
    expire = placed.after(PAYMENT_TIMEOUT, name="payment_timeout").to(cancelled)
    escalate = picking.after(ESCALATION, name="escalate").to(escalated)
    ship_late = escalated.on("parcel.shipped").to(shipped, action=record_carrier)


class ParcelV1ToV2(Migration):
    """Packing is picking now; parcels get a currency."""

    source = ParcelV1
    target = ParcelV2
    states = {"packing": "picking"}
    not_migratable = ("manual_review",)

    @staticmethod
    def upgrade(data: dict[str, Any]) -> dict[str, Any]:
        if data.get("key", "").startswith("bad-"):
            return {**data, "currency": 978}  # not a str: fails v2's data schema
        return {**data, "currency": "EUR"}


class ParcelV2ToV1(Migration):
    """Back to v1 (a rollback): picking and escalated parcels are packing again."""

    source = ParcelV2
    target = ParcelV1
    states = {"picking": "packing", "escalated": "packing"}

    @staticmethod
    def upgrade(data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k != "currency"}
