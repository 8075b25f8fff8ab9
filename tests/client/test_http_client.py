"""The async client against a real ``conveyor dev`` (API and worker): every /v1 call."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from conveyor_client import AsyncConveyor, DeadLetter, Instance, NotFound
from conveyor_client.emit import Emitter
from tests.conftest import wait_for
from tests.e2e.http_support import order_data
from tests.live_support import LiveConsole

PAYMENT = {"payment_id": "pay-1", "provider": "acme"}


def key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_start_is_idempotent_get_and_find_by_key_agree(admin: AsyncConveyor) -> None:
    business_key = key("o/1 zürich")  # a "/" and non-ASCII: one percent-encoded segment
    first = await admin.start(
        "order", business_key, order_data(business_key), idempotency_key=f"start-{business_key}"
    )
    again = await admin.start(
        "order", business_key, order_data(business_key), idempotency_key=f"start-{business_key}"
    )
    assert again.id == first.id
    assert (first.workflow, first.state, first.status, first.revision) == (
        "order",
        "placed",
        "active",
        1,
    )
    assert first.created_at.tzinfo is not None
    assert first.data["order_id"] == business_key
    assert first.raw["business_key"] == business_key
    assert (await admin.get(first.id)).id == first.id
    found = await admin.find("order", business_key)
    assert (found.id, found.earlier) == (first.id, ())


async def test_list_follows_cursors_over_pages_with_filters(admin: AsyncConveyor) -> None:
    prefix = key("list")
    customer = key("cust")
    started = []
    for n in range(5):
        data = {**order_data(f"{prefix}-{n}"), "customer_id": customer}
        started.append(await admin.start("order", f"{prefix}-{n}", data))
    page = await admin.instances_page(workflow="order", business_key_prefix=prefix, limit=2)
    assert len(page.items) == 2
    assert page.next_cursor is not None
    every = [
        i.id
        async for i in admin.instances(page_size=2, workflow="order", business_key_prefix=prefix)
    ]
    assert sorted(every) == sorted(i.id for i in started)
    assert len(every) == len(set(every))
    by_data = [
        i.business_key
        async for i in admin.instances(
            page_size=2,
            workflow="order",
            state="placed",
            status="active",
            data={"customer_id": customer},
            created_after=datetime.now(UTC) - timedelta(hours=1),
        )
    ]
    assert sorted(by_data) == [f"{prefix}-{n}" for n in range(5)]
    none = [
        i async for i in admin.instances(business_key_prefix=prefix, in_state_longer_than="P1D")
    ]
    assert none == []
    breached = [i async for i in admin.instances(business_key_prefix=prefix, sla_breached=True)]
    assert breached == []


async def test_send_events_history_timers_and_a_duplicate(writer: AsyncConveyor) -> None:
    order = key("ord")
    started = await writer.start("order", order, order_data(order))
    pending = await writer.send(started.id, "payment.initiated", PAYMENT, event_id=f"{order}-1")
    assert (pending.status, pending.accepted, pending.instance.state) == (
        "applied",
        False,
        "payment_pending",
    )
    (timer,) = await writer.timers(started.id)
    assert (timer.name, timer.state, timer.kind) == ("payment_timeout", "payment_pending", "timer")
    assert timer.due_at > datetime.now(UTC)
    again = await writer.send(started.id, "payment.initiated", PAYMENT, event_id=f"{order}-1")
    assert (again.status, again.outcome.original_status) == ("duplicate", "applied")
    captured = {"payment_id": "pay-1", "amount": "10", "currency": "EUR"}
    paid = await writer.send(started.id, "payment.captured", captured)
    assert (paid.outcome.from_state, paid.outcome.to_state) == ("payment_pending", "paid")
    history = [h async for h in writer.history(started.id, page_size=1)]
    assert [h.event_type for h in history] == [
        "order.placed",
        "payment.initiated",
        "payment.captured",
    ]
    assert [h.revision for h in history] == [1, 2, 3]
    assert history[1].event_id == f"{order}-1"
    assert history[2].occurred_at.tzinfo is not None
    page = await writer.history_page(started.id, limit=2)
    assert len(page.items) == 2
    assert page.next_cursor is not None


async def test_operator_cancel_move_and_retry_of_a_failed_instance(
    admin: AsyncConveyor, live: LiveConsole
) -> None:
    order = key("cancel")
    started = await admin.start("order", order, order_data(order))
    cancelled = await admin.cancel(started.id, reason="customer called")
    assert (cancelled.mode, cancelled.instance.status) == ("transition", "cancelled")
    assert (await admin.cancel(started.id)).mode == "already"

    moving = await admin.start("order", key("move"), order_data("m"))
    moved = await admin.move(moving.id, "paid", reason="paid by phone")
    assert moved.state == "paid"

    desk = key("desk")
    (live.fault_dir / desk).touch()
    label = await admin.start("test.label_desk", desk, {"key": desk})
    failed = await admin.send(label.id, "label.print", {"label": "L-1"})
    assert (failed.status, failed.accepted, failed.instance.status) == ("failed", True, "failed")
    assert failed.instance.error is not None
    (live.fault_dir / desk).unlink()  # the printer is back
    retried = await admin.retry(label.id)
    assert (retried.status, retried.instance.state, retried.instance.status) == (
        "applied",
        "printed",
        "active",
    )


async def test_workflows_stats_health_and_readiness(
    admin: AsyncConveyor, live: LiveConsole
) -> None:
    assert await admin.health()
    readiness = await admin.ready()
    assert readiness.ready
    assert readiness.checks["postgresql"]["status"] == "up"
    summaries = {w.name: w for w in await admin.workflows()}
    assert summaries["order"].start_event == "order.placed"
    assert summaries["test.parcel"].versions == (1, 2)
    order = await admin.workflow("order")
    assert (order.name, order.version, order.initial_state) == ("order", 1, "placed")
    assert "paid" in order.states
    assert "payment.initiated" in order.allowed_events["placed"]
    v1 = await admin.workflow("test.parcel", version=1)
    assert v1.version == 1
    assert "stateDiagram" in await admin.diagram("order")
    placed = await admin.start("order", key("stats"), order_data("s"))
    assert "placed" in await admin.diagram("order", instance_id=placed.id)
    stats = await admin.stats("order")
    (entry,) = [w for w in stats.workflows if w.workflow == "order"]
    assert entry.total >= 1
    assert entry.by_status["active"] >= 1
    assert {s.state for s in entry.states} >= {"placed"}
    assert stats.as_of.tzinfo is not None
    async with httpx.AsyncClient(base_url=live.base) as own:
        async with AsyncConveyor(live.base, live.keys.read, client=own) as borrowed:
            assert (await borrowed.get(placed.id)).id == placed.id
        assert (await own.get("/health")).status_code == 200  # still open: not ours to close


async def test_bulk_dry_run_then_a_job_cancels_what_the_filter_selects(
    admin: AsyncConveyor,
) -> None:
    prefix = key("bulk")
    for n in range(3):
        await admin.start("order", f"{prefix}-{n}", order_data(f"{prefix}-{n}"))
    preview = await admin.bulk_preview(
        "cancel", workflow="order", business_key_prefix=prefix, reason="test"
    )
    assert (preview.action, preview.count, len(preview.sample)) == ("cancel", 3, 3)
    assert all(isinstance(i, Instance) for i in preview.sample)
    job_key = f"job-{prefix}"
    job = await admin.bulk(
        "cancel",
        workflow="order",
        business_key_prefix=prefix,
        reason="test",
        idempotency_key=job_key,
    )
    assert (job.action, job.total, job.created) == ("cancel", 3, True)
    same = await admin.bulk(
        "cancel",
        workflow="order",
        business_key_prefix=prefix,
        reason="test",
        idempotency_key=job_key,
    )
    assert (same.id, same.created) == (job.id, False)

    async def finished() -> bool:
        return (await admin.bulk_job(job.id)).finished

    await wait_for(finished)
    done = await admin.bulk_job(job.id)
    assert (done.status, done.succeeded) == ("completed", 3)
    items = [i async for i in admin.bulk_items(job.id, page_size=2)]
    assert {i.status for i in items} == {"succeeded"}
    assert len(items) == 3
    assert (await admin.cancel_bulk_job(job.id)).status == "completed"
    left = [i async for i in admin.instances(business_key_prefix=prefix, status="active")]
    assert left == []


async def test_migrations_are_listed_and_judged_in_a_dry_run(admin: AsyncConveyor) -> None:
    (migration, *_) = await admin.migrations("test.parcel")
    assert (migration.from_version, migration.to_version) == (1, 2)
    parcel = key("parcel")
    started = await admin.start("test.parcel", parcel, {"key": parcel}, version=1)
    report = await admin.migration_dry_run("test.parcel", 1, 2, {"ids": [started.id]})
    assert (report.migration.name, report.selected, report.would_migrate) == (
        migration.name,
        1,
        1,
    )
    assert report.counts["ok"] == 1
    job = await admin.migrate("test.parcel", 1, 2, {"ids": [started.id]})
    assert job.workflow == "test.parcel"

    async def finished() -> bool:
        return (await admin.migration_job(job.id)).finished

    await wait_for(finished)
    (item,) = [i async for i in admin.migration_items(job.id)]
    assert item.instance_id == started.id
    assert (await admin.get(started.id)).version == 2
    assert (await admin.cancel_migration_job(job.id)).status == "completed"


async def test_a_dead_letter_is_listed_read_and_replayed_fixed(
    admin: AsyncConveyor, live: LiveConsole, live_topics: str
) -> None:
    order = key("dlq")
    started = await admin.start("order", order, order_data(order))
    async with Emitter(live.settings.kafka_servers(), topic_prefix=live_topics) as emitter:
        sent = await emitter.emit("payment.initiated", order, {"provider": ""})

    async def listed() -> list[DeadLetter]:
        return [d async for d in admin.dead_letters(business_key=order, status="pending")]

    (letter,) = await wait_for(listed, timeout=60)
    assert letter.event_id == sent.id
    assert letter.reason == "invalid_payload"
    detail = await admin.dead_letter(letter.id)
    assert detail.value is not None
    assert sent.id in detail.value
    replayed = await admin.replay_dead_letter(detail.id, data=PAYMENT)
    assert replayed.status == "replayed"
    assert replayed.resolution is not None
    assert (await admin.get(started.id)).state == "payment_pending"
    with pytest.raises(NotFound) as unknown:
        await admin.dead_letter(10**15)
    assert unknown.value.status == 404
