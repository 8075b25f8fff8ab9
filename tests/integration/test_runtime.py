"""The durable runtime against the real PostgreSQL: idempotency, locking, failures, timers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import operations
from engine.errors import InstanceConflict, InvalidState, PayloadInvalid
from engine.model import Event, InstanceStatus
from engine.registry import Registry
from engine.runtime import Runtime
from engine.scheduler import TimerScheduler
from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.queries import InstanceFilter
from tests import flows
from workflows.order import Order

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def registry(*definitions: Any) -> Registry:
    reg = Registry()
    for definition in definitions or (Order, flows.Counter):
        reg.register(definition)
    return reg


def order_data(order_id: str, total: str = "10") -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "C-1",
        "currency": "EUR",
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": str(float(total) / 2)}],
        "total": total,
    }


async def rows(db: AsyncEngine, query: str, **params: Any) -> list[Any]:
    async with db.connect() as conn:
        return list((await conn.execute(text(query), params)).all())


def ev(
    instance_id: uuid.UUID, type_: str, payload: dict[str, Any] | None = None, **kw: Any
) -> Event:
    return Event(
        type=type_,
        event_id=kw.pop("event_id", str(uuid.uuid4())),
        payload=payload or {},
        instance_id=instance_id,
        **kw,
    )


# ---------------------------------------------------------------- start


async def test_start_with_the_same_idempotency_key_returns_the_same_instance(
    runtime: Runtime,
) -> None:
    first = await runtime.start("order", "ORD-1", order_data("ORD-1"), idempotency_key="k-1")
    again = await runtime.start("order", "ORD-1", order_data("ORD-1"), idempotency_key="k-1")
    assert first.created
    assert not again.created
    assert again.instance.id == first.instance.id
    assert first.instance.state == "placed"
    assert first.instance.revision == 1


async def test_start_of_an_existing_business_key_from_another_start_conflicts(
    runtime: Runtime,
) -> None:
    await runtime.start("order", "ORD-2", order_data("ORD-2"), idempotency_key="a")
    with pytest.raises(InstanceConflict, match="ORD-2"):
        await runtime.start("order", "ORD-2", order_data("ORD-2"), idempotency_key="b")
    with pytest.raises(InstanceConflict):
        await runtime.start("order", "ORD-2", order_data("ORD-2"))


async def test_start_with_invalid_data_names_the_fields_and_writes_nothing(
    runtime: Runtime, db: AsyncEngine
) -> None:
    bad = order_data("ORD-3")
    bad["currency"] = "euro"
    del bad["customer_id"]
    with pytest.raises(PayloadInvalid) as info:
        await runtime.start("order", "ORD-3", bad)
    paths = {f.path for f in info.value.field_errors}
    assert {"currency", "customer_id"} <= paths
    assert await rows(db, "select id from instances") == []


async def test_start_writes_history_timers_and_a_state_changed_message(
    runtime: Runtime, db: AsyncEngine, settings: Settings
) -> None:
    started = await runtime.start("test.counter", "C-1", {"key": "C-1"})
    history = await runtime.history(started.instance.id)
    assert [(h.outcome, h.to_state) for h in history] == [("started", "open")]
    timers = await rows(db, "select name, due_at from timers")
    assert timers == [("idle", T0 + timedelta(hours=1))]
    outbox = await rows(db, "select topic, key from outbox")
    assert outbox == [(f"{settings.topic_prefix}.instances", b"C-1")]


# ---------------------------------------------------------------- events


async def test_the_same_event_twice_makes_one_transition(runtime: Runtime) -> None:
    started = await runtime.start("order", "ORD-4", order_data("ORD-4"))
    event = ev(started.instance.id, "payment.initiated", {"payment_id": "P", "provider": "x"})
    first = await runtime.send(event)
    second = await runtime.send(event)
    assert (first.status, first.to_state) == ("applied", "payment_pending")
    assert second.status == "duplicate"
    instance = await runtime.get(started.instance.id)
    assert instance.revision == 2
    history = await runtime.history(instance.id)
    assert [h.event_id for h in history].count(event.event_id) == 1


async def test_events_can_be_addressed_by_business_key(runtime: Runtime) -> None:
    await runtime.start("order", "ORD-5", order_data("ORD-5"))
    outcome = await runtime.send(
        Event(
            type="payment.initiated",
            event_id="e-bk",
            payload={"payment_id": "P", "provider": "x"},
            workflow="order",
            business_key="ORD-5",
        )
    )
    assert outcome.status == "applied"
    missing = await runtime.send(
        Event(type="payment.initiated", event_id="e-nk", workflow="order", business_key="NOPE")
    )
    assert missing.status == "not_found"


async def test_a_refused_event_is_recorded_as_rejected_and_changes_nothing(
    runtime: Runtime,
) -> None:
    started = await runtime.start("order", "ORD-6", order_data("ORD-6"))
    outcome = await runtime.send(
        ev(started.instance.id, "order.shipped", {"carrier": "c", "tracking_number": "t"})
    )
    assert outcome.status == "rejected"
    assert outcome.rejection is not None
    assert outcome.rejection.reason == "not_allowed"
    assert "payment.initiated" in outcome.rejection.allowed_events
    instance = await runtime.get(started.instance.id)
    assert (instance.state, instance.revision) == ("placed", 1)
    history = await runtime.history(instance.id)
    assert history[-1].outcome == "rejected"
    assert history[-1].reason is not None
    assert "allowed here" in history[-1].reason


async def test_fifty_concurrent_events_on_one_instance_lose_no_update(
    runtime: Runtime,
) -> None:
    started = await runtime.start("test.counter", "C-50", {"key": "C-50"})
    events = [ev(started.instance.id, "counter.tick", {"by": 1}) for _ in range(50)]
    outcomes = await asyncio.gather(*(runtime.send(e) for e in events))
    assert [o.status for o in outcomes] == ["applied"] * 50
    instance = await runtime.get(started.instance.id)
    assert instance.data["count"] == 50
    assert instance.revision == 51
    history = await runtime.history(instance.id, limit=1000)
    # Serial: each accepted trigger got the next revision, in commit order.
    assert [h.revision for h in history] == list(range(1, 52))
    assert sorted(o.revision or 0 for o in outcomes) == list(range(2, 52))


async def test_two_instances_advance_in_parallel(runtime: Runtime, settings: Settings) -> None:
    a = (await runtime.start("test.counter", "A", {"key": "A"})).instance
    b = (await runtime.start("test.counter", "B", {"key": "B"})).instance
    blocker = create_engine(settings, pool_size=1)
    try:
        async with blocker.begin() as conn:
            # Another transaction holds A's row lock: B must not wait for it.
            await conn.execute(
                text("select 1 from instances where id = :id for update"), {"id": a.id}
            )
            a_task = asyncio.create_task(runtime.send(ev(a.id, "counter.tick")))
            b_outcome = await asyncio.wait_for(runtime.send(ev(b.id, "counter.tick")), 10)
            assert b_outcome.status == "applied"
            assert not a_task.done()
        a_outcome = await asyncio.wait_for(a_task, 10)
    finally:
        await blocker.dispose()
    assert a_outcome.status == "applied"


async def test_send_many_applies_a_batch_in_order_per_instance(
    runtime: Runtime, db: AsyncEngine
) -> None:
    ids = [
        (await runtime.start("test.counter", f"K{i}", {"key": f"K{i}"})).instance.id
        for i in range(5)
    ]
    batch: list[Event] = []
    for round_ in range(1, 4):
        batch.extend(ev(i, "counter.tick", {"by": round_}) for i in ids)
    batch.append(ev(ids[0], "counter.close"))
    batch.append(ev(ids[0], "counter.tick"))  # after close: the instance finished
    outcomes = await runtime.send_many(batch)
    assert [o.status for o in outcomes[:-1]] == ["applied"] * 16
    assert outcomes[-1].status == "rejected"
    for instance_id in ids:
        instance = await runtime.get(instance_id)
        assert instance.data["count"] == 6
    closed = await runtime.get(ids[0])
    assert (closed.state, closed.status) == ("closed", InstanceStatus.COMPLETED)
    # One outbox message per tick, a state change per start and for the close; the ticks
    # are internal transitions (no state change to announce).
    assert (await rows(db, "select count(*) from outbox"))[0][0] == 5 + 15 + 1


# ---------------------------------------------------------------- failures


async def test_a_failing_action_is_retried_then_applied(runtime: Runtime) -> None:
    started = await runtime.start("test.counter", "F-1", {"key": "F-1"})
    flows.FAILURES["F-1"] = 2  # fails twice; the policy allows three attempts
    outcome = await runtime.send(ev(started.instance.id, "counter.label", {"label": "ok"}))
    assert (outcome.status, outcome.to_state) == ("applied", "labelled")
    instance = await runtime.get(started.instance.id)
    assert instance.data["label"] == "ok"


async def test_an_action_that_keeps_failing_fails_the_instance_then_operator_retry_applies_it(
    runtime: Runtime, db: AsyncEngine
) -> None:
    started = await runtime.start("test.counter", "F-2", {"key": "F-2"})
    await runtime.send(ev(started.instance.id, "counter.tick"))
    flows.FAILURES["F-2"] = 3
    event = ev(started.instance.id, "counter.label", {"label": "late"})
    outcome = await runtime.send(event)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert "exploded" in outcome.error
    failed = await runtime.get(started.instance.id)
    assert failed.status is InstanceStatus.FAILED
    # Nothing of the failed transition was applied: state, data and messages unchanged.
    assert (failed.state, failed.data["label"], failed.data["count"]) == ("open", "", 1)
    assert failed.error is not None
    assert failed.error["attempts"] == 3
    history = await runtime.history(failed.id)
    assert history[-1].outcome == "failed"
    assert history[-1].reason is not None
    assert "exploded" in history[-1].reason
    # A failed instance refuses further events, and says why.
    refused = await runtime.send(ev(failed.id, "counter.tick"))
    assert refused.status == "rejected"
    assert refused.rejection is not None
    assert refused.rejection.reason == "inactive"

    retried = await operations.retry(runtime, failed.id)  # FAILURES is now 0: the action succeeds
    assert (retried.status, retried.to_state) == ("applied", "labelled")
    recovered = await runtime.get(failed.id)
    assert (recovered.status, recovered.data["label"]) == (InstanceStatus.ACTIVE, "late")
    with pytest.raises(InvalidState):
        await operations.retry(runtime, failed.id)


async def test_cancel_removes_timers_and_later_events_are_refused(
    runtime: Runtime, db: AsyncEngine
) -> None:
    started = await runtime.start("test.counter", "X-1", {"key": "X-1"})
    cancelled = await operations.cancel(runtime, started.instance.id, reason="customer asked")
    assert cancelled.instance.status is InstanceStatus.CANCELLED
    assert await rows(db, "select * from timers") == []
    outcome = await runtime.send(ev(started.instance.id, "counter.tick"))
    assert outcome.status == "rejected"
    history = await runtime.history(started.instance.id)
    assert [h.outcome for h in history] == ["started", "cancelled", "rejected"]


# ---------------------------------------------------------------- timers


async def test_a_timer_fires_after_a_restart(
    settings: Settings, clock: FakeClock, db: AsyncEngine
) -> None:
    first = Runtime(create_engine(settings), registry(), clock=clock)
    started = await first.start("order", "ORD-T", order_data("ORD-T"))
    await first.send(
        ev(started.instance.id, "payment.initiated", {"payment_id": "P", "provider": "x"})
    )
    await first.db.dispose()  # the process is gone; the timer is in PostgreSQL

    clock.advance(timedelta(minutes=31))
    second = Runtime(create_engine(settings), registry(), clock=clock)
    try:
        outcomes = await TimerScheduler(second).fire_due()
        instance = await second.get(started.instance.id)
    finally:
        await second.db.dispose()
    assert [o.status for o in outcomes] == ["applied"]
    assert (instance.state, instance.status) == ("cancelled", InstanceStatus.CANCELLED)
    assert instance.data["cancellation_reason"] == "payment timeout"
    assert await rows(db, "select * from timers") == []


async def test_a_timer_that_is_not_due_does_not_fire(runtime: Runtime, clock: FakeClock) -> None:
    started = await runtime.start("test.counter", "N-1", {"key": "N-1"})
    clock.advance(timedelta(minutes=59))
    assert await TimerScheduler(runtime).fire_due() == []
    assert (await runtime.get(started.instance.id)).state == "open"


async def test_overdue_timers_fire_once_with_two_schedulers(
    settings: Settings, clock: FakeClock, db: AsyncEngine
) -> None:
    engines = [create_engine(settings) for _ in range(2)]
    runtimes = [Runtime(e, registry(), clock=clock) for e in engines]
    try:
        ids = [
            (await runtimes[0].start("test.counter", f"T{i}", {"key": f"T{i}"})).instance.id
            for i in range(40)
        ]
        clock.advance(timedelta(hours=2))
        schedulers = [TimerScheduler(rt, batch_size=7) for rt in runtimes]

        async def drain(scheduler: TimerScheduler) -> int:
            applied = 0
            while outcomes := await scheduler.fire_due():
                applied += sum(o.status == "applied" for o in outcomes)
            return applied

        counts = await asyncio.gather(*(drain(s) for s in schedulers))
    finally:
        for pool in engines:
            await pool.dispose()
    assert sum(counts) == 40
    fired = await rows(
        db,
        "select instance_id, count(*) from history where source = 'timer' group by instance_id",
    )
    assert sorted(r[0] for r in fired) == sorted(ids)
    assert {r[1] for r in fired} == {1}
    assert await rows(db, "select * from timers") == []


async def test_a_timer_cancelled_by_a_transition_never_fires(
    runtime: Runtime, clock: FakeClock
) -> None:
    started = await runtime.start("test.counter", "L-1", {"key": "L-1"})
    await runtime.send(ev(started.instance.id, "counter.label", {"label": "x"}))
    clock.advance(timedelta(hours=2))
    assert await TimerScheduler(runtime).fire_due() == []
    assert (await runtime.get(started.instance.id)).state == "labelled"


# ---------------------------------------------------------------- queries and versions


async def test_list_filters_and_keyset_pagination(runtime: Runtime, clock: FakeClock) -> None:
    for i in range(7):
        clock.advance(timedelta(seconds=1))
        await runtime.start("test.counter", f"PAGE-{i}", {"key": f"P{i}"})
    await runtime.start("order", "ORD-P", order_data("ORD-P"))
    seen: list[str] = []
    cursor = None
    while True:
        page = await runtime.list_instances(
            InstanceFilter(workflow="test.counter", business_key_prefix="PAGE-"),
            limit=3,
            cursor=cursor,
        )
        seen.extend(i.business_key for i in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"PAGE-{i}" for i in reversed(range(7))]
    orders = await runtime.list_instances(InstanceFilter(workflow="order", state="placed"))
    assert [i.business_key for i in orders.items] == ["ORD-P"]
    none = await runtime.list_instances(InstanceFilter(business_key_prefix="PAGE_"))
    assert none.items == ()  # '_' is not a wildcard


async def test_running_instances_stay_on_their_version(db: AsyncEngine, clock: FakeClock) -> None:
    v1_only = Runtime(db, registry(flows.Counter), clock=clock)
    old = (await v1_only.start("test.counter", "V-1", {"key": "V-1"})).instance
    both = Runtime(db, registry(flows.Counter, flows.CounterV2), clock=clock)
    new = (await both.start("test.counter", "V-2", {"key": "V-2"})).instance
    assert (old.version, new.version) == (1, 2)
    await both.send(ev(old.id, "counter.tick"))
    await both.send(ev(new.id, "counter.tick"))
    assert (await both.get(old.id)).state == "open"  # v1: tick is internal
    assert (await both.get(new.id)).state == "counted"  # v2: tick finishes
    pinned = (await both.start("test.counter", "V-3", {"key": "V-3"}, version=1)).instance
    assert pinned.version == 1


@pytest.fixture(autouse=True)
def _reset_failures() -> AsyncIterator[None] | None:
    flows.FAILURES.clear()
    return None


async def test_the_same_event_sent_concurrently_takes_effect_once(runtime: Runtime) -> None:
    started = await runtime.start("test.counter", "DUP", {"key": "DUP"})
    event = ev(started.instance.id, "counter.tick", {"by": 1})
    outcomes = await asyncio.gather(*(runtime.send(event) for _ in range(10)))
    assert sorted(o.status for o in outcomes) == ["applied"] + ["duplicate"] * 9
    assert (await runtime.get(started.instance.id)).data["count"] == 1


async def test_concurrent_starts_share_transactions_and_keep_their_guarantees(
    runtime: Runtime, db: AsyncEngine
) -> None:
    distinct = await asyncio.gather(
        *(runtime.start("test.counter", f"S-{i}", {"key": f"S-{i}"}) for i in range(30))
    )
    assert all(r.created for r in distinct)
    assert len({r.instance.id for r in distinct}) == 30

    same_key = await asyncio.gather(
        *(
            runtime.start("test.counter", "SAME", {"key": "SAME"}, idempotency_key="k")
            for _ in range(10)
        )
    )
    assert sum(r.created for r in same_key) == 1
    assert len({r.instance.id for r in same_key}) == 1

    rivals = await asyncio.gather(
        *(
            runtime.start("test.counter", "RIVAL", {"key": "RIVAL"}, idempotency_key=f"r{i}")
            for i in range(5)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in rivals) == 1
    assert all(isinstance(r, InstanceConflict) for r in rivals if isinstance(r, BaseException))
    # Only the 32 starts that inserted an instance wrote history, messages and timers.
    history = await rows(db, "select count(*) from history where outcome = 'started'")
    assert history[0][0] == 32
    assert (await rows(db, "select count(*) from outbox"))[0][0] == 32
    assert (await rows(db, "select count(*) from timers"))[0][0] == 32


async def test_a_started_instance_is_what_the_database_holds(runtime: Runtime) -> None:
    started = await runtime.start("order", "ORD-S", order_data("ORD-S"))
    assert await runtime.get(started.instance.id) == started.instance
    assert started.instance.id.version == 7  # time-ordered ids for new instances


async def test_concurrent_gets_share_queries_and_a_missing_id_fails_alone(
    runtime: Runtime,
) -> None:
    from engine.errors import InstanceNotFound

    ids = [
        (await runtime.start("test.counter", f"G-{i}", {"key": f"G-{i}"})).instance.id
        for i in range(20)
    ]
    missing = uuid.uuid4()
    results = await asyncio.gather(
        *(runtime.get(i) for i in [*ids, missing, *ids]), return_exceptions=True
    )
    assert [r.id for r in results[:20] if not isinstance(r, BaseException)] == ids
    assert isinstance(results[20], InstanceNotFound)
    assert [r.id for r in results[21:] if not isinstance(r, BaseException)] == ids


async def test_an_outcome_carries_the_instance_as_the_event_left_it(runtime: Runtime) -> None:
    started = await runtime.start("test.counter", "O-1", {"key": "O-1"})
    outcome = await runtime.send(ev(started.instance.id, "counter.tick", {"by": 3}))
    assert outcome.instance is not None
    stored = await runtime.get(started.instance.id)
    assert outcome.instance == stored
