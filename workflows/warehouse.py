"""Warehouse fulfilment: inbound receiving (ASN to stock) and outbound (allocation to dispatch)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from engine.dsl import ActionContext, GuardContext, OperatorCancel, State, Workflow, on, on_cancel

QC_REMINDER = timedelta(hours=4)
CARRIER_PICKUP_REMINDER = timedelta(hours=12)
MAX_REALLOCATIONS = 2


class StockLine(BaseModel):
    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0)


# ---------------------------------------------------------------- inbound


class InboundData(BaseModel):
    """An advance shipping notice (ASN) and what happened to the goods it announced."""

    asn_id: str = Field(min_length=1)
    vendor_id: str = Field(min_length=1)
    warehouse_id: str = Field(min_length=1)
    expected: list[StockLine] = Field(min_length=1)
    dock_door: str | None = None
    received: list[StockLine] = []
    qc_failure_reason: str | None = None
    location: str | None = None
    qc_reminders: int = 0


class ReceivingStarted(BaseModel):
    dock_door: str = Field(min_length=1)


class ReceivingCompleted(BaseModel):
    received: list[StockLine] = Field(min_length=1)


class QualityCheckFailed(BaseModel):
    reason: str = Field(min_length=1)
    disposition: Literal["return_to_vendor", "write_off"]


class PutawayCompleted(BaseModel):
    location: str = Field(min_length=1)


def vendor_takes_goods_back(ctx: GuardContext[InboundData, QualityCheckFailed]) -> bool:
    """The QC decision sends the goods back to the vendor rather than writing them off."""
    return ctx.payload.disposition == "return_to_vendor"


async def assign_dock(ctx: ActionContext[InboundData, ReceivingStarted]) -> None:
    ctx.data.dock_door = ctx.payload.dock_door


async def record_received(ctx: ActionContext[InboundData, ReceivingCompleted]) -> None:
    ctx.data.received = list(ctx.payload.received)
    expected = {line.sku: line.quantity for line in ctx.data.expected}
    received = {line.sku: line.quantity for line in ctx.payload.received}
    if expected != received:
        ctx.emit(
            "asn.discrepancy_found",
            {"asn_id": ctx.data.asn_id, "expected": expected, "received": received},
        )


async def remind_quality_check(ctx: ActionContext[InboundData, Any]) -> None:
    ctx.data.qc_reminders += 1
    ctx.emit("qc.overdue", {"asn_id": ctx.data.asn_id, "reminder": ctx.data.qc_reminders})


async def request_vendor_return(ctx: ActionContext[InboundData, QualityCheckFailed]) -> None:
    ctx.data.qc_failure_reason = ctx.payload.reason
    ctx.command(
        "vendor.return_requested",
        {"asn_id": ctx.data.asn_id, "vendor_id": ctx.data.vendor_id, "reason": ctx.payload.reason},
    )


async def write_off_damaged(ctx: ActionContext[InboundData, QualityCheckFailed]) -> None:
    ctx.data.qc_failure_reason = ctx.payload.reason
    ctx.emit("inventory.written_off", {"asn_id": ctx.data.asn_id, "reason": ctx.payload.reason})


async def add_to_stock(ctx: ActionContext[InboundData, PutawayCompleted]) -> None:
    ctx.data.location = ctx.payload.location
    ctx.emit(
        "inventory.stocked",
        {
            "warehouse_id": ctx.data.warehouse_id,
            "location": ctx.payload.location,
            "lines": [line.model_dump() for line in ctx.data.received],
        },
    )


class Inbound(Workflow[InboundData]):
    """Goods announced by a vendor: received at a dock, checked, put away."""

    name = "warehouse.inbound"
    version = 1
    data_schema = InboundData
    start_event = "asn.received"
    events = {
        "receiving.started": ReceivingStarted,
        "receiving.completed": ReceivingCompleted,
        "qc.failed": QualityCheckFailed,
        "putaway.completed": PutawayCompleted,
    }

    asn_received = State("Shipment announced by the vendor", initial=True)
    receiving = State("Unloading at a dock door")
    quality_check = State("Inspecting received goods; reminders every 4 hours")
    putaway = State("Moving goods to storage locations")
    stocked = State("Available to sell", final=True)
    damaged = State("Written off as damaged", final=True)
    returned_to_vendor = State("Sent back to the vendor", final=True)

    start_receiving = asn_received.on("receiving.started").to(receiving, action=assign_dock)
    finish_receiving = receiving.on("receiving.completed").to(quality_check, action=record_received)
    qc_reminder = quality_check.after(QC_REMINDER, name="qc_reminder").to(
        quality_check, action=remind_quality_check
    )
    pass_qc = quality_check.on("qc.passed").to(putaway)
    fail_qc = quality_check.on("qc.failed").to(
        returned_to_vendor, guard=vendor_takes_goods_back, action=request_vendor_return
    ) | quality_check.on("qc.failed").to(damaged, action=write_off_damaged)
    stock = putaway.on("putaway.completed").to(stocked, action=add_to_stock)


# ---------------------------------------------------------------- outbound


class OutboundData(BaseModel):
    """One fulfilment: stock allocated to an order, picked, packed and handed to a carrier."""

    fulfilment_id: str = Field(min_length=1)
    order_id: str = Field(min_length=1)
    warehouse_id: str = Field(min_length=1)
    lines: list[StockLine] = Field(min_length=1)
    picker_id: str | None = None
    reallocations: int = 0
    short_skus: list[str] = []
    parcel_weight_grams: int | None = None
    carrier: str | None = None
    awb: str | None = None
    cancellation_reason: str | None = None


class PickStarted(BaseModel):
    picker_id: str = Field(min_length=1)


class PickShort(BaseModel):
    missing: list[StockLine] = Field(min_length=1)


class PackCompleted(BaseModel):
    weight_grams: int = Field(gt=0)


class ManifestCreated(BaseModel):
    carrier: str = Field(min_length=1)
    awb: str = Field(min_length=1, description="Air waybill number from the carrier")


class AllocationCancelled(BaseModel):
    reason: str = Field(min_length=1)


OutCtx = ActionContext[OutboundData, Any]


def can_reallocate(ctx: GuardContext[OutboundData, PickShort]) -> bool:
    """Stock may be allocated again (elsewhere) a limited number of times."""
    return ctx.data.reallocations < MAX_REALLOCATIONS


async def assign_picker(ctx: ActionContext[OutboundData, PickStarted]) -> None:
    ctx.data.picker_id = ctx.payload.picker_id


async def request_reallocation(ctx: ActionContext[OutboundData, PickShort]) -> None:
    ctx.data.reallocations += 1
    ctx.data.short_skus = [line.sku for line in ctx.payload.missing]
    ctx.data.picker_id = None
    ctx.command(
        "inventory.reallocate",
        {
            "fulfilment_id": ctx.data.fulfilment_id,
            "missing": [line.model_dump() for line in ctx.payload.missing],
        },
    )


async def give_up_short_pick(ctx: ActionContext[OutboundData, PickShort]) -> None:
    ctx.data.short_skus = [line.sku for line in ctx.payload.missing]
    ctx.data.cancellation_reason = "short pick; reallocation limit reached"


async def record_cancellation(ctx: ActionContext[OutboundData, AllocationCancelled]) -> None:
    ctx.data.cancellation_reason = ctx.payload.reason


async def record_operator_cancel(ctx: ActionContext[OutboundData, OperatorCancel]) -> None:
    ctx.data.cancellation_reason = ctx.payload.reason or "cancelled by an operator"


async def record_parcel(ctx: ActionContext[OutboundData, PackCompleted]) -> None:
    ctx.data.parcel_weight_grams = ctx.payload.weight_grams


async def record_manifest(ctx: ActionContext[OutboundData, ManifestCreated]) -> None:
    ctx.data.carrier = ctx.payload.carrier
    ctx.data.awb = ctx.payload.awb


async def chase_carrier(ctx: OutCtx) -> None:
    ctx.emit("carrier.pickup_overdue", {"fulfilment_id": ctx.data.fulfilment_id})


async def announce_dispatched(ctx: OutCtx) -> None:
    ctx.emit(
        "fulfilment.dispatched",
        {"order_id": ctx.data.order_id, "carrier": ctx.data.carrier, "awb": ctx.data.awb},
    )


async def announce_cancelled(ctx: OutCtx) -> None:
    ctx.emit(
        "fulfilment.cancelled",
        {"order_id": ctx.data.order_id, "reason": ctx.data.cancellation_reason},
    )


class Outbound(Workflow[OutboundData]):
    """Stock allocated to an order travels through picking and packing to the carrier."""

    name = "warehouse.outbound"
    version = 1
    data_schema = OutboundData
    start_event = "allocation.created"
    events = {
        "pick.started": PickStarted,
        "pick.short": PickShort,
        "pack.completed": PackCompleted,
        "manifest.created": ManifestCreated,
        "allocation.cancelled": AllocationCancelled,
    }

    allocated = State("Stock reserved for the order", initial=True)
    picking = State("A picker is collecting the items")
    picked = State("All items collected")
    packing = State("Being packed")
    packed = State("Parcel sealed and weighed")
    manifested = State("On the carrier manifest; waiting for pickup")
    dispatched = State("Handed to the carrier", final=True, on_enter=[announce_dispatched])
    cancelled = State("Not fulfilled", cancelled=True, on_enter=[announce_cancelled])

    start_pick = allocated.on("pick.started").to(picking, action=assign_picker)
    complete_pick = picking.on("pick.completed").to(picked)
    short_pick = picking.on("pick.short").to(
        allocated, guard=can_reallocate, action=request_reallocation
    ) | picking.on("pick.short").to(cancelled, action=give_up_short_pick)
    start_packing = picked.on("pack.started").to(packing)
    complete_packing = packing.on("pack.completed").to(packed, action=record_parcel)
    manifest = packed.on("manifest.created").to(manifested, action=record_manifest)
    pickup_reminder = manifested.after(CARRIER_PICKUP_REMINDER, name="pickup_reminder").to(
        manifested, action=chase_carrier
    )
    dispatch = manifested.on("dispatch.confirmed").to(dispatched)
    cancel = on("allocation.cancelled", allocated, picking, picked, packing, packed).to(
        cancelled, action=record_cancellation
    )
    operator_cancel = on_cancel(allocated, picking, picked, packing, packed).to(
        cancelled, action=record_operator_cancel
    )
