"""The test kit decides as the runtime does: one scenario through both, the same result.

A few orders go through payments, a timer firing (a payment timeout and a packing
escalation), rejections, a business cancel and an operator's cancel that asks for a
refund, once on :class:`engine.testing.WorkflowEnvironment` and once on the real
:class:`engine.runtime.Runtime` over PostgreSQL with its timer scheduler and a fake clock.
States, statuses, data, history (outcomes, reasons, transitions, payloads) and outbound
messages (topics, keys, types, payloads) must be equal. Ids derived from instance ids
(random in the runtime, seeded in the kit) are left out of the comparison.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import operations
from engine.model import Event, Outcome
from engine.runtime import Runtime
from engine.scheduler import TimerScheduler
from engine.settings import Settings
from engine.store.writeset import STATE_CHANGED
from engine.testing import Handle, WorkflowEnvironment
from tests import flows
from tests.integration.test_runtime import T0, FakeClock, registry

Snapshot = dict[str, Any]


class Driver(Protocol):
    async def start(self, workflow: str, key: str, data: Mapping[str, Any]) -> uuid.UUID: ...

    async def send(
        self, instance_id: uuid.UUID, type_: str, payload: Mapping[str, Any], event_id: str
    ) -> Outcome: ...

    async def advance(self, by: timedelta) -> list[str]: ...

    async def cancel(self, instance_id: uuid.UUID, reason: str) -> str | None: ...

    async def retry(self, instance_id: uuid.UUID) -> str: ...

    async def snapshot(self, instance_id: uuid.UUID) -> Snapshot: ...


class KitDriver:
    def __init__(self) -> None:
        self.env = WorkflowEnvironment(registry=registry(), start=T0)

    async def start(self, workflow: str, key: str, data: Mapping[str, Any]) -> uuid.UUID:
        return (await self.env.start(workflow, key, data)).id

    async def send(
        self, instance_id: uuid.UUID, type_: str, payload: Mapping[str, Any], event_id: str
    ) -> Outcome:
        return await self.env.send(instance_id, type_, payload, id=event_id)

    async def advance(self, by: timedelta) -> list[str]:
        return [
            f"{f.name}@{f.at.isoformat()}:{f.outcome.status}" for f in await self.env.advance(by)
        ]

    async def cancel(self, instance_id: uuid.UUID, reason: str) -> str | None:
        return (await self.env.cancel(instance_id, reason=reason)).transition

    async def retry(self, instance_id: uuid.UUID) -> str:
        return (await self.env.retry(instance_id)).status

    async def snapshot(self, instance_id: uuid.UUID) -> Snapshot:
        handle = Handle(self.env, instance_id)
        instance = handle.instance
        return _snapshot(
            instance.id,
            (instance.business_key, instance.state, instance.status.value, instance.revision),
            {"data": instance.data, "error": instance.error},
            [h.to_json() for h in handle.history],
            [(m.topic, m.key, m.cloudevent) for m in handle.messages],
        )


class RuntimeDriver:
    """The runtime, with timers fired by its scheduler each when due (the clock steps to
    each due time, as the kit's does)."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db
        self.clock = FakeClock(T0)
        self.runtime = Runtime(db, registry(), topic_prefix="conveyor", clock=self.clock)
        self.scheduler = TimerScheduler(self.runtime)

    async def start(self, workflow: str, key: str, data: Mapping[str, Any]) -> uuid.UUID:
        return (await self.runtime.start(workflow, key, data)).instance.id

    async def send(
        self, instance_id: uuid.UUID, type_: str, payload: Mapping[str, Any], event_id: str
    ) -> Outcome:
        return await self.runtime.send(Event(type_, event_id, payload, instance_id=instance_id))

    async def advance(self, by: timedelta) -> list[str]:
        until = self.clock.now + by
        fired: list[str] = []
        while (due := await self._next_due()) is not None and due <= until:
            self.clock.now = max(self.clock.now, due)
            claimed = await self.scheduler.claim()
            if not claimed:
                break
            outcomes = await self.runtime.fire_timers(claimed)
            fired += [
                f"{c.name}@{self.clock.now.isoformat()}:{o.status}"
                for c, o in zip(claimed, outcomes, strict=True)
            ]
        self.clock.now = until
        return fired

    async def _next_due(self) -> datetime | None:
        async with self.db.connect() as conn:
            due: datetime | None = (
                await conn.execute(
                    text("select min(due_at) from timers where claimed_until is null")
                )
            ).scalar()
            return due

    async def cancel(self, instance_id: uuid.UUID, reason: str) -> str | None:
        return (await operations.cancel(self.runtime, instance_id, reason=reason)).transition

    async def retry(self, instance_id: uuid.UUID) -> str:
        return (await operations.retry(self.runtime, instance_id)).status

    async def snapshot(self, instance_id: uuid.UUID) -> Snapshot:
        instance = await self.runtime.get(instance_id)
        history = await self.runtime.history(instance_id)
        async with self.db.connect() as conn:
            outbox = (
                await conn.execute(
                    text("select topic, key, value from outbox where instance_id = :i order by id"),
                    {"i": instance_id},
                )
            ).all()
        return _snapshot(
            instance.id,
            (instance.business_key, instance.state, instance.status.value, instance.revision),
            {"data": instance.data, "error": instance.error},
            [h.to_json() for h in history],
            [(topic, key.decode(), json.loads(value)) for topic, key, value in outbox],
        )


def _snapshot(
    instance_id: uuid.UUID,
    row: tuple[str, str, str, int],
    data: Mapping[str, Any],
    history: list[dict[str, Any]],
    messages: list[tuple[str, str, Mapping[str, Any]]],
) -> Snapshot:
    """What must be equal: everything but ids derived from the instance id, the history's
    row ids, and the messages' publication time."""
    own = str(instance_id)

    def masked(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(own, "<instance>")
        if isinstance(value, Mapping):
            return {k: masked(v) for k, v in value.items()}
        if isinstance(value, list):
            return [masked(v) for v in value]
        return value

    entries = []
    for entry in history:
        entry = {k: v for k, v in entry.items() if k != "id"}
        if entry["source"] == "timer":
            entry.pop("event_id")  # a timer's id derives from the instance id
        entries.append(masked(entry))
    published = []
    for topic, key, event in messages:
        data_ = dict(event.get("data") or {})
        if event["type"] == STATE_CHANGED:
            data_.pop("event_id")  # a timer's or a start's id derives from the instance id
        published.append(
            masked(
                {
                    "topic": topic,
                    "key": key,
                    "type": event["type"],
                    "kind": event.get("conveyorkind"),
                    "source": event["source"],
                    "subject": event["subject"],
                    "instance": event.get("conveyorinstance"),
                    "data": data_,
                }
            )
        )
    return {"instance": row, "data": masked(data), "history": entries, "messages": published}


def order_data(order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "c-1",
        "currency": "EUR",
        "items": [{"sku": "book", "quantity": 2, "unit_price": "10.00"}],
        "total": "20.00",
    }


async def scenario(driver: Driver) -> dict[str, Any]:
    """Four orders: escalated and packed; paid and cancelled by an operator (a refund);
    timed out before payment; cancelled by the customer. With rejections on the way."""
    keys = ("o-1", "o-2", "o-3", "o-4")
    ids = {key: await driver.start("order", key, order_data(key)) for key in keys}
    statuses: list[str] = []

    async def send(key: str, type_: str, payload: Mapping[str, Any], event_id: str) -> None:
        outcome = await driver.send(ids[key], type_, payload, event_id)
        reason = outcome.rejection.reason if outcome.rejection else None
        statuses.append(f"{key} {type_}: {outcome.status} {reason or ''}".strip())

    captured = {"payment_id": "pay-1", "amount": "20.00", "currency": "EUR"}
    for key in ("o-1", "o-2", "o-3"):
        await send(key, "payment.initiated", {"payment_id": "pay-1", "provider": "card"}, "e-1")
    for key in ("o-1", "o-2"):
        await send(key, "payment.captured", captured, "e-2")
    await send("o-1", "order.shipped", {"carrier": "dhl", "tracking_number": "t"}, "e-3")
    await send("o-3", "payment.captured", {"payment_id": "p"}, "e-3")  # invalid payload
    await send("o-4", "order.cancellation_requested", {"reason": "changed my mind"}, "e-1")
    await send("o-4", "payment.initiated", {"payment_id": "p", "provider": "card"}, "e-2")
    await send("o-2", "payment.captured", captured, "e-2")  # a duplicate

    fired = await driver.advance(timedelta(hours=25))
    await send("o-1", "order.packed", {}, "e-4")
    await send("o-1", "delivery.completed", {}, "e-5")  # not allowed in 'packed'
    cancels = [await driver.cancel(ids["o-2"], "out of stock")]
    fired += await driver.advance(timedelta(days=2))  # the dispatch SLA is no timer
    return {
        "outcomes": statuses,
        "fired": fired,
        "cancels": cancels,
        "instances": {key: await driver.snapshot(i) for key, i in ids.items()},
    }


async def test_the_kit_and_the_runtime_agree_on_a_scenario(
    db: AsyncEngine, settings: Settings
) -> None:
    in_memory = await scenario(KitDriver())
    durable = await scenario(RuntimeDriver(db))

    assert in_memory["outcomes"] == durable["outcomes"]
    assert in_memory["fired"] == durable["fired"]
    assert in_memory["cancels"] == durable["cancels"] == ["operator_cancel_paid"]
    for key in ("o-1", "o-2", "o-3", "o-4"):
        kit, real = in_memory["instances"][key], durable["instances"][key]
        assert kit["instance"] == real["instance"], key
        assert kit["data"] == real["data"], key
        assert kit["data"]["error"] is None
        assert kit["history"] == real["history"], key
        assert kit["messages"] == real["messages"], key

    # The scenario did what it says.
    states = {key: snap["instance"][1:3] for key, snap in durable["instances"].items()}
    assert states == {
        "o-1": ("packed", "active"),
        "o-2": ("cancelled", "cancelled"),
        "o-3": ("cancelled", "cancelled"),
        "o-4": ("cancelled", "cancelled"),
    }
    assert [f.split("@")[0] for f in durable["fired"]] == [
        "payment_timeout",
        "packing_overdue",
        "packing_overdue",
    ]
    refunds = [
        m
        for m in durable["instances"]["o-2"]["messages"]
        if m["type"] == "payment.refund_requested"
    ]
    assert [m["kind"] for m in refunds] == ["command"]
    reasons = {o.split(": ")[1] for o in durable["outcomes"]}
    assert {"rejected not_allowed", "rejected invalid_payload", "rejected inactive"} <= reasons
    assert "duplicate" in reasons


async def failing_scenario(driver: Driver) -> dict[str, Any]:
    """Failing actions: one retried by a timer after a backoff with an event parked behind
    it; one failing every immediate attempt, then retried by an operator (failing again:
    retrying on zero-backoff timers until it succeeds); an idle timer that waits while its
    instance is failed."""
    flows.FAILURES.clear()
    ids = {key: await driver.start("test.counter", key, {"key": key}) for key in ("k-1", "k-2")}
    ids["k-3"] = await driver.start("test.counter", "k-3", {"key": "k-3"})
    statuses: list[str] = []

    async def send(key: str, type_: str, payload: Mapping[str, Any], event_id: str) -> None:
        outcome = await driver.send(ids[key], type_, payload, event_id)
        statuses.append(f"{key} {type_}: {outcome.status} {outcome.error or ''}".strip())

    flows.FAILURES.update({"k-1": 1, "k-2": 5, "k-3": 3})
    await send("k-1", "counter.slow_label", {"label": "slow"}, "e-1")  # retrying
    await send("k-1", "counter.tick", {"by": 2}, "e-2")  # parked
    await send("k-1", "counter.tick", {"by": 2}, "e-2")  # parked once
    await send("k-2", "counter.label", {"label": "fast"}, "e-1")  # failed after 3 attempts
    await send("k-2", "counter.tick", {"by": 1}, "e-2")  # refused: the instance failed
    await send("k-3", "counter.label", {"label": "never"}, "e-1")  # failed
    fired = await driver.advance(timedelta(seconds=31))
    retried = [await driver.retry(ids["k-2"])]  # fails again: retrying, no backoff
    fired += await driver.advance(timedelta(seconds=1))
    fired += await driver.advance(timedelta(hours=2))  # k-3 failed: its idle timer waits
    flows.FAILURES.clear()
    return {
        "outcomes": statuses,
        "fired": fired,
        "retried": retried,
        "instances": {key: await driver.snapshot(i) for key, i in ids.items()},
    }


async def test_the_kit_and_the_runtime_agree_on_failures_and_retries(db: AsyncEngine) -> None:
    in_memory = await failing_scenario(KitDriver())
    durable = await failing_scenario(RuntimeDriver(db))

    assert in_memory["outcomes"] == durable["outcomes"]
    assert in_memory["fired"] == durable["fired"]
    assert in_memory["retried"] == durable["retried"] == ["retrying"]
    for key in ("k-1", "k-2", "k-3"):
        assert in_memory["instances"][key] == durable["instances"][key], key

    states = {key: snap["instance"][1:3] for key, snap in durable["instances"].items()}
    assert states == {
        "k-1": ("labelled", "active"),
        "k-2": ("labelled", "active"),
        "k-3": ("open", "failed"),
    }
    outcomes = [h["outcome"] for h in durable["instances"]["k-1"]["history"]]
    assert outcomes == ["started", "retrying", "resumed", "applied", "rejected"]
