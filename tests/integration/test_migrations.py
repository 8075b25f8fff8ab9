"""Migrating running instances between versions, against the real PostgreSQL: a dry run by
replay over 10,000 instances, applying as a durable job, timers keeping their deadlines,
forcing, rolling back, and what is recorded."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import migrate, operations
from engine.bulk_runner import JobRunner
from engine.errors import InvalidRequest
from engine.model import Event
from engine.registry import UnknownMigration, load_workflows
from engine.runtime import Runtime
from engine.scheduler import TimerScheduler
from engine.settings import Settings
from tests.evolution_flows import ESCALATION, PAYMENT_TIMEOUT
from tests.integration.test_runtime import T0, FakeClock

WORKFLOW = "test.parcel"


@pytest.fixture
def parcels(db: AsyncEngine, settings: Settings, clock: FakeClock) -> Runtime:
    registry = load_workflows(["tests.evolution_flows"])
    return Runtime(db, registry, topic_prefix=settings.topic_prefix, clock=clock)


async def start(runtime: Runtime, keys: list[str], chunk: int = 500) -> None:
    for first in range(0, len(keys), chunk):
        await asyncio.gather(
            *(
                runtime.start(WORKFLOW, k, {"key": k}, version=1)
                for k in keys[first : first + chunk]
            )
        )


async def send(
    runtime: Runtime, event_type: str, keys: list[str], payload: dict[str, Any] | None = None
) -> None:
    chunk = 500
    for first in range(0, len(keys), chunk):
        outcomes = await asyncio.gather(
            *(
                runtime.send(
                    Event(
                        type=event_type,
                        event_id=f"{event_type}-{k}",
                        payload=payload or {},
                        workflow=WORKFLOW,
                        business_key=k,
                    )
                )
                for k in keys[first : first + chunk]
            )
        )
        assert {o.status for o in outcomes} == {"applied"}, outcomes[0]


async def scalar(db: AsyncEngine, sql: str, **params: Any) -> Any:
    async with db.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def rows(db: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with db.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


def request(**filters: Any) -> migrate.MigrationRequest:
    force = bool(filters.pop("force", False))
    return migrate.MigrationRequest(WORKFLOW, 1, 2, migrate.parse_filter(filters), force=force)


async def run_job(runtime: Runtime, job_id: Any) -> None:
    runner = JobRunner(runtime, batch_size=250)
    await runner.run_job(job_id)
    job = await migrate.get(runtime, job_id)
    assert job.status == "completed", job


# 10,000 parcels: most paid 50 and packing; a minority paid 5 (v2's guard refuses
# payments under 10: they diverge), some flagged for review (not migratable), some
# whose data v2 refuses.
N = 10_000
CHEAP = [f"cheap-{i}" for i in range(300)]
FLAGGED = [f"flagged-{i}" for i in range(200)]
BAD = [f"bad-{i}" for i in range(100)]
GOOD = [f"good-{i}" for i in range(N - len(CHEAP) - len(FLAGGED) - len(BAD))]


async def test_a_dry_run_over_10000_instances_reports_the_diverging_minority_and_writes_nothing(
    parcels: Runtime, db: AsyncEngine, clock: FakeClock
) -> None:
    await start(parcels, GOOD + CHEAP + FLAGGED + BAD)
    clock.advance(timedelta(minutes=5))
    await send(parcels, "parcel.paid", GOOD + BAD, {"amount": 50})
    await send(parcels, "parcel.paid", CHEAP, {"amount": 5})
    await send(parcels, "parcel.flagged", FLAGGED)
    await send(parcels, "parcel.packing", GOOD)
    history_before = await scalar(db, "select count(*) from history")
    outbox_before = await scalar(db, "select count(*) from outbox")

    seen: list[tuple[int, int]] = []
    report = await migrate.dry_run(parcels, request(), progress=lambda d, t: seen.append((d, t)))
    shown = report.to_json()
    assert shown["selected"] == N
    assert shown["counts"] == {
        "ok": len(GOOD),
        "diverges": len(CHEAP),
        "unmapped": len(FLAGGED),
        "invalid_data": len(BAD),
    }
    assert shown["would_migrate"] == len(GOOD)
    assert report.to_json(force=True)["would_migrate"] == len(GOOD) + len(CHEAP)
    assert seen[-1] == (N, N)
    assert len(shown["instances"]) == len(CHEAP) + len(FLAGGED) + len(BAD)
    by_key = {i["business_key"]: i for i in shown["instances"]}
    cheap = by_key["cheap-7"]
    assert cheap["outcome"] == "diverges"
    assert cheap["from_state"] == cheap["to_state"] == "paid"
    assert cheap["divergence"]["event_type"] == "parcel.paid"
    assert cheap["divergence"]["event_id"] == "parcel.paid-cheap-7"
    assert cheap["divergence"]["decided"] == "rejected (guard_refused)"
    assert by_key["flagged-3"]["outcome"] == "unmapped"
    assert by_key["bad-3"]["outcome"] == "invalid_data"
    assert "good-1" not in by_key  # ok instances are counted, not listed

    # Nothing was written.
    assert await scalar(db, "select count(*) from history") == history_before
    assert await scalar(db, "select count(*) from outbox") == outbox_before
    assert await scalar(db, "select count(*) from instances where version <> 1") == 0

    # A narrower selection: by state.
    packing = await migrate.dry_run(parcels, request(states=["packing"]))
    assert packing.to_json()["counts"]["ok"] == len(GOOD)
    assert packing.total == len(GOOD)


async def test_applying_migrates_each_ok_instance_once_and_skips_the_others(
    parcels: Runtime, db: AsyncEngine, clock: FakeClock, settings: Settings
) -> None:
    good = [f"good-{i}" for i in range(400)]
    cheap = [f"cheap-{i}" for i in range(20)]
    flagged = [f"flagged-{i}" for i in range(10)]
    await start(parcels, good + cheap + flagged)
    await send(parcels, "parcel.paid", good, {"amount": 50})
    await send(parcels, "parcel.paid", cheap, {"amount": 5})
    await send(parcels, "parcel.flagged", flagged)
    await send(parcels, "parcel.packing", good[:100])

    job, created = await migrate.create(parcels, request(), request_id="req-migrate-1")
    assert created
    assert (job.kind, job.total, job.status) == ("migration", 430, "running")
    shown = migrate.job_json(job)
    assert (shown["migration"], shown["from_version"], shown["to_version"]) == (
        "test.parcel-v1-to-v2",
        1,
        2,
    )
    await run_job(parcels, job.id)
    done = await migrate.get(parcels, job.id)
    assert (done.succeeded, done.skipped, done.failed) == (400, 30, 0)

    versions = dict(
        await rows(db, "select version, count(*) from instances group by version order by 1")
    )
    assert versions == {1: 30, 2: 400}
    states = dict(
        await rows(db, "select state, count(*) from instances where version = 2 group by state")
    )
    assert states == {"picking": 100, "paid": 300}
    # Data upgraded; status and time in state kept.
    (data, status, revision) = (
        await rows(db, "select data, status, revision from instances where business_key = 'good-0'")
    )[0]
    assert data["currency"] == "EUR"
    assert (status, revision) == ("active", 4)
    # One history row each: the migration, the versions and states, the request id.
    recorded = await rows(
        db,
        "select h.event_type, h.outcome, h.from_state, h.to_state, h.transition,"
        " h.request_id, h.payload from history h join instances i on i.id = h.instance_id"
        " where i.business_key = 'good-0' and h.outcome = 'migrated'",
    )
    assert len(recorded) == 1
    event_type, outcome, from_state, to_state, transition, request_id, payload = recorded[0]
    assert (event_type, outcome, from_state, to_state) == (
        "conveyor.migrate",
        "migrated",
        "packing",
        "picking",
    )
    assert (transition, request_id) == ("test.parcel-v1-to-v2", "req-migrate-1")
    assert payload["from_version"] == 1
    assert payload["to_version"] == 2
    assert payload["verdict"]["outcome"] == "ok"
    assert payload["data"]["currency"] == "EUR"
    assert (
        await scalar(
            db,
            "select count(*) from (select instance_id from history where outcome = 'migrated'"
            " group by instance_id having count(*) = 1) once",
        )
        == 400
    )
    # A state_changed message per migrated instance, naming the new version.
    changed = await rows(
        db,
        "select convert_from(value, 'UTF8') from outbox"
        " where topic = :topic and convert_from(value, 'UTF8') like '%conveyor.migrate%'",
        topic=f"{settings.topic_prefix}.instances",
    )
    assert len(changed) == 400
    message = orjson.loads(changed[0][0])
    assert message["source"] == "conveyor/test.parcel/v2"
    assert message["data"]["version"] == 2
    assert message["data"]["event_type"] == "conveyor.migrate"

    # Skipped ones say why; a second run selects only those left on v1.
    skipped = await migrate.items(parcels, job.id, status="skipped", limit=100)
    reasons = {s.reason.split(":")[0] for s in skipped if s.reason}
    assert reasons == {"diverges", "unmapped"}
    again = await migrate.dry_run(parcels, request())
    assert again.total == 30

    # Migrated instances go on under v2: a cheap payment is now refused, picking ships.
    outcome = await parcels.send(
        Event(
            type="parcel.shipped",
            event_id="ship-good-0",
            payload={"carrier": "DHL"},
            workflow=WORKFLOW,
            business_key="good-0",
        )
    )
    assert (outcome.status, outcome.to_state) == ("applied", "shipped")


async def test_a_forced_migration_moves_diverging_instances_and_records_why(
    parcels: Runtime, db: AsyncEngine
) -> None:
    await start(parcels, ["cheap-1", "flagged-1"])
    await send(parcels, "parcel.paid", ["cheap-1"], {"amount": 5})
    await send(parcels, "parcel.flagged", ["flagged-1"])
    job, _ = await migrate.create(parcels, request(force=True))
    await run_job(parcels, job.id)
    done = await migrate.get(parcels, job.id)
    assert (done.succeeded, done.skipped) == (1, 1)
    (version, reason, payload) = (
        await rows(
            db,
            "select i.version, h.reason, h.payload from instances i join history h"
            " on h.instance_id = i.id and h.outcome = 'migrated' where i.business_key = 'cheap-1'",
        )
    )[0]
    assert version == 2
    assert "no guard passed" in reason
    assert payload["forced"] is True
    assert payload["verdict"]["outcome"] == "diverges"
    # Not migratable is never forced.
    assert await scalar(db, "select version from instances where business_key = 'flagged-1'") == 1


async def test_timers_of_the_new_state_are_set_from_when_the_state_was_entered(
    parcels: Runtime, db: AsyncEngine, clock: FakeClock
) -> None:
    await start(parcels, ["waiting", "picked"])
    await send(parcels, "parcel.paid", ["picked"], {"amount": 50})
    clock.advance(timedelta(minutes=10))
    await send(parcels, "parcel.packing", ["picked"])
    entered = clock.now
    clock.advance(timedelta(minutes=15))  # 25 minutes after the start
    job, _ = await migrate.create(parcels, request())
    await run_job(parcels, job.id)

    timers = dict(
        await rows(
            db,
            "select i.business_key || '/' || t.name, t.due_at from timers t"
            " join instances i on i.id = t.instance_id",
        )
    )
    # The payment timeout keeps its deadline (30 min after the start, not after now) and
    # picking's 48-hour escalation runs from when the parcel entered packing.
    assert timers == {
        "waiting/payment_timeout": T0 + PAYMENT_TIMEOUT,
        "picked/escalate": entered + ESCALATION,
    }
    # Due timers fire on the new version.
    clock.advance(timedelta(minutes=10))
    fired = await TimerScheduler(parcels).fire_due()
    assert [(o.status, o.to_state) for o in fired] == [("applied", "cancelled")]
    clock.now = entered + ESCALATION + timedelta(seconds=1)
    fired = await TimerScheduler(parcels).fire_due()
    assert [(o.status, o.to_state) for o in fired] == [("applied", "escalated")]


async def test_a_migration_can_be_rolled_back_by_replaying_from_the_migration(
    parcels: Runtime, db: AsyncEngine
) -> None:
    await start(parcels, ["round-trip"])
    await send(parcels, "parcel.paid", ["round-trip"], {"amount": 50})
    await send(parcels, "parcel.packing", ["round-trip"])
    job, _ = await migrate.create(parcels, request())
    await run_job(parcels, job.id)
    await send(parcels, "parcel.shipped", ["round-trip"], {"carrier": "UPS"})

    back = migrate.MigrationRequest(WORKFLOW, 2, 1, migrate.parse_filter({}))
    report = await migrate.dry_run(parcels, back)
    assert report.to_json()["counts"]["ok"] == 1
    job, _ = await migrate.create(parcels, back)
    await run_job(parcels, job.id)
    version, state, data = (
        await rows(
            db, "select version, state, data from instances where business_key = 'round-trip'"
        )
    )[0]
    assert (version, state) == (1, "shipped")
    assert "currency" not in data
    assert data["carrier"] == "UPS"


async def test_failed_and_ended_instances_are_selected_as_the_issue_says(
    parcels: Runtime, db: AsyncEngine, clock: FakeClock
) -> None:
    await start(parcels, ["ended", "live"])
    await send(parcels, "parcel.paid", ["ended", "live"], {"amount": 50})
    await send(parcels, "parcel.packing", ["ended"])
    await send(parcels, "parcel.shipped", ["ended"], {"carrier": "DHL"})
    await send(parcels, "parcel.delivered", ["ended"])
    report = await migrate.dry_run(parcels, request())
    assert report.total == 1  # a delivered parcel has ended: never migrated
    assert (await migrate.dry_run(parcels, request(status="failed"))).total == 0
    assert (await migrate.dry_run(parcels, request(business_key_prefix="li"))).total == 1


async def test_bad_requests_say_what_is_wrong(parcels: Runtime) -> None:
    with pytest.raises(UnknownMigration, match=r"no migration of test\.parcel from v1 to v3"):
        await migrate.dry_run(parcels, migrate.MigrationRequest(WORKFLOW, 1, 3))
    with pytest.raises(InvalidRequest, match="declares no state 'lost'"):
        await migrate.dry_run(parcels, request(states=["lost"]))
    with pytest.raises(InvalidRequest, match="unknown filter 'colour'"):
        migrate.parse_filter({"colour": "red"})
    with pytest.raises(InvalidRequest, match="status"):
        migrate.parse_filter({"status": "completed"})


async def test_a_failed_instance_migrates_and_its_retry_applies_the_event_on_the_new_version(
    parcels: Runtime, db: AsyncEngine
) -> None:
    await start(parcels, ["fragile"])
    await send(parcels, "parcel.paid", ["fragile"], {"amount": 50})
    await send(parcels, "parcel.packing", ["fragile"])
    failed = await parcels.send(
        Event(
            type="parcel.shipped",
            event_id="ship-fragile",
            payload={"carrier": "OLDPOST"},
            workflow=WORKFLOW,
            business_key="fragile",
        )
    )
    assert failed.status == "failed"
    report = await migrate.dry_run(parcels, request(status="failed"))
    assert report.to_json()["counts"]["ok"] == 1
    job, _ = await migrate.create(parcels, request(status="failed"))
    await run_job(parcels, job.id)
    instance = await parcels.find(WORKFLOW, "fragile")
    assert (instance.version, instance.state, instance.status.value) == (2, "picking", "failed")
    retried = await operations.retry(parcels, instance.id, request_id="after-migration")
    assert (retried.status, retried.to_state) == ("applied", "shipped")
    shipped = await parcels.find(WORKFLOW, "fragile")
    assert (shipped.version, shipped.status.value, shipped.data["carrier"]) == (
        2,
        "active",
        "OLDPOST",
    )
