"""The database gauges every process serves on /metrics: read from PostgreSQL at scrape
time, and kept (with the time they were read) when the database does not answer."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.gauges import DatabaseGauges
from engine.model import Event
from engine.runtime import Runtime
from engine.settings import Settings
from engine.slas import StateSla
from engine.store.database import create_engine
from tests.integration.test_runtime import FakeClock, order_data
from tests.metrics_support import one, samples

PAYMENT_TIMEOUT = timedelta(minutes=30)  # workflows/order.py: payment_pending's timer


def page_of(gauges: DatabaseGauges) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(gauges)
    return generate_latest(registry).decode()


async def pending_payment(runtime: Runtime, key: str) -> None:
    await runtime.start("order", key, order_data(key))
    outcome = await runtime.send(
        Event(
            "payment.initiated",
            f"{key}-pay",
            {"payment_id": f"p-{key}", "provider": "card"},
            workflow="order",
            business_key=key,
        )
    )
    assert outcome.status == "applied"


async def test_outbox_timer_and_sla_gauges_come_from_the_database(
    runtime: Runtime, db: AsyncEngine, clock: FakeClock
) -> None:
    gauges = DatabaseGauges(
        slas=[StateSla("order", 1, "payment_pending", timedelta(minutes=10))],
        now=clock,
        min_interval=0,
    )
    assert "conveyor_outbox_backlog_messages" not in page_of(gauges)  # not read yet: absent
    await gauges.refresh(db)
    page = samples(page_of(gauges))
    assert one(page, "conveyor_outbox_backlog_messages") == 0
    assert one(page, "conveyor_timers_overdue") == 0
    assert one(page, "conveyor_timer_lag_seconds") == 0
    assert one(page, "conveyor_outbox_oldest_unpublished_age_seconds") == 0
    assert one(page, "conveyor_instances_sla_breached", workflow="order") == 0

    for key in ("o-1", "o-2"):
        await pending_payment(runtime, key)
    clock.advance(PAYMENT_TIMEOUT + timedelta(seconds=90))  # both timers 90 s overdue
    await gauges.refresh(db)
    page = samples(page_of(gauges))
    assert one(page, "conveyor_outbox_backlog_messages") >= 4  # starts and transitions
    assert one(page, "conveyor_outbox_oldest_unpublished_age_seconds") >= 0
    assert one(page, "conveyor_timers_overdue") == 2
    assert one(page, "conveyor_timer_lag_seconds") == 90
    breached = {"workflow": "order", "state": "payment_pending"}
    assert one(page, "conveyor_instances_sla_breached", **breached) == 2
    assert one(page, "conveyor_database_gauges_read_timestamp_seconds") == clock().timestamp()


async def test_a_database_outage_serves_the_last_figures(
    runtime: Runtime, db: AsyncEngine, clock: FakeClock, settings: Settings
) -> None:
    await pending_payment(runtime, "o-1")
    clock.advance(PAYMENT_TIMEOUT + timedelta(minutes=1))
    gauges = DatabaseGauges(now=clock, min_interval=0, timeout=3.0)
    await gauges.refresh(db)
    before = samples(page_of(gauges))
    read_at = one(before, "conveyor_database_gauges_read_timestamp_seconds")

    # Nothing listens on port 1: every query fails at once.
    gone = create_engine(settings.model_copy(update={"database_url": _port_1(settings)}))
    try:
        clock.advance(timedelta(minutes=5))
        await gauges.refresh(gone)  # never raises
        await gauges.refresh(gone)
    finally:
        await gone.dispose()
    after = samples(page_of(gauges))
    assert one(after, "conveyor_database_gauges_errors_total") == 2
    assert one(after, "conveyor_database_gauges_read_timestamp_seconds") == read_at
    for name in ("conveyor_outbox_backlog_messages", "conveyor_timers_overdue"):
        assert one(after, name) == one(before, name)
    assert one(after, "conveyor_timer_lag_seconds") == 60  # as read, not aged since

    await gauges.refresh(db)  # the database is back: fresh figures
    assert one(samples(page_of(gauges)), "conveyor_timer_lag_seconds") == 360


async def test_scrapes_within_min_interval_share_one_reading(
    db: AsyncEngine, clock: FakeClock
) -> None:
    gauges = DatabaseGauges(now=clock, min_interval=60)
    await gauges.refresh(db)
    first = gauges.read_at
    clock.advance(timedelta(seconds=5))
    await gauges.refresh(db)
    assert gauges.read_at == first


def _port_1(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).set(port=1).render_as_string(hide_password=False)
