"""A migration job as operators run it: a `conveyor worker` killed with SIGKILL in the middle
of migrating 3,000 parcels from v1 to v2, and a new worker finishing the job, each parcel
migrated exactly once (one ``migrated`` history row, one ``state_changed`` message), the
diverging ones skipped."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from engine import migrate
from engine.model import Event
from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.settings import Settings
from tests.conftest import wait_for
from tests.e2e.test_worker_process import alive, count, worker, worker_env

__all__ = ["worker_env"]  # the fixture, used below

WORKFLOW = "test.parcel"
GOOD = 3_000
CHEAP = 100


async def make_parcels(runtime: Runtime, keys: list[str], amount: int) -> None:
    chunk = 250
    for first in range(0, len(keys), chunk):
        part = keys[first : first + chunk]
        await asyncio.gather(*(runtime.start(WORKFLOW, k, {"key": k}, version=1) for k in part))
        outcomes = await asyncio.gather(
            *(
                runtime.send(
                    Event(
                        type="parcel.paid",
                        event_id=f"pay-{k}",
                        payload={"amount": amount},
                        workflow=WORKFLOW,
                        business_key=k,
                    )
                )
                for k in part
            )
        )
        assert {o.status for o in outcomes} == {"applied"}


async def test_a_migration_survives_a_killed_worker_and_migrates_each_instance_once(
    settings: Settings, db: AsyncEngine, worker_env: dict[str, str], tmp_path: Path
) -> None:
    runtime = Runtime(
        db, load_workflows(["tests.evolution_flows"]), topic_prefix=settings.topic_prefix
    )
    await make_parcels(runtime, [f"good-{i}" for i in range(GOOD)], 50)
    await make_parcels(runtime, [f"cheap-{i}" for i in range(CHEAP)], 5)  # these diverge
    request = migrate.MigrationRequest(WORKFLOW, 1, 2, migrate.parse_filter({}))
    job, _ = await migrate.create(runtime, request, request_id="kill-test")
    assert job.total == GOOD + CHEAP
    env: dict[str, Any] = dict(
        worker_env, CONVEYOR_WORKFLOW_MODULES="workflows,tests.evolution_flows"
    )
    log = tmp_path / "worker.log"
    settled = f"select count(*) from job_items where job_id = '{job.id}' and status <> 'pending'"
    migrated = "select count(*) from instances where version = 2"

    with worker(env, log) as proc:
        check = alive(proc, log)

        async def under_way() -> bool:
            check()
            return await count(db, settled) > 0

        await wait_for(under_way, timeout=120, interval=0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    halfway = await migrate.get(runtime, job.id)
    assert 0 < halfway.done < GOOD + CHEAP, "the kill should land mid-job"
    assert halfway.status == "running"
    # What committed is consistent: the migrated instances are those of succeeded items.
    assert await count(db, migrated) == halfway.succeeded

    with worker(env, log) as proc:
        check = alive(proc, log)

        async def completed() -> bool:
            check()
            return (await migrate.get(runtime, job.id)).status == "completed"

        await wait_for(completed, timeout=300, interval=0.2)
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(proc.wait, 25)
    assert returncode == 0, log.read_text()[-3000:]
    done = await migrate.get(runtime, job.id)
    assert (done.succeeded, done.skipped, done.failed) == (GOOD, CHEAP, 0)
    assert await count(db, migrated) == GOOD
    assert await count(db, "select count(*) from instances where version = 1") == CHEAP
    # Exactly once: one migrated history row and one state_changed message per instance.
    assert await count(db, "select count(*) from history where outcome = 'migrated'") == GOOD
    assert (
        await count(
            db,
            "select count(distinct instance_id) from history where outcome = 'migrated'",
        )
        == GOOD
    )
    assert (
        await count(
            db,
            "select count(*) from outbox where topic like '%.instances'"
            " and convert_from(value, 'UTF8') like '%\"event_type\":\"conveyor.migrate\"%'",
        )
        == GOOD
    )
    # The revision grew by one (start, payment, migration).
    assert (
        await count(db, "select count(*) from instances where version = 2 and revision = 3") == GOOD
    )
