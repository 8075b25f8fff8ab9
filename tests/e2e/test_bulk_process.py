"""Bulk jobs as operators run them: a `conveyor worker` killed with SIGKILL in the middle
of a bulk cancel of 5,000 orders, and a new worker finishing it (each order cancelled
exactly once); `conveyor instances cancel` with its confirmation and progress bar."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from engine import bulk
from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.settings import Settings
from tests.conftest import wait_for
from tests.e2e.http_support import order_data
from tests.e2e.test_worker_process import alive, count, worker, worker_env

__all__ = ["worker_env"]  # the fixture, used below

ORDERS = 5_000
CONVEYOR = str(Path(sys.executable).with_name("conveyor"))


async def start_orders(runtime: Runtime, prefix: str, n: int, chunk: int = 250) -> None:
    """Start ``n`` orders through the real start path, ``chunk`` at a time (concurrent
    starts are committed together)."""
    for first in range(0, n, chunk):
        keys = [f"{prefix}-{i}" for i in range(first, min(first + chunk, n))]
        await asyncio.gather(*(runtime.start("order", k, order_data(k)) for k in keys))


def order_runtime(db: AsyncEngine, settings: Settings) -> Runtime:
    return Runtime(db, load_workflows(["workflows"]), topic_prefix=settings.topic_prefix)


async def test_a_bulk_cancel_survives_a_killed_worker_and_cancels_each_order_once(
    settings: Settings, db: AsyncEngine, worker_env: dict[str, str], tmp_path: Path
) -> None:
    runtime = order_runtime(db, settings)
    await start_orders(runtime, "kill", ORDERS)
    request = bulk.BulkRequest(
        "cancel", bulk.parse_filter({"workflow": "order"}), reason="bulk kill test"
    )
    job, _ = await bulk.create(runtime, request)
    assert job.total == ORDERS
    log = tmp_path / "worker.log"

    async def settled() -> int:
        return await count(
            db, f"select count(*) from job_items where job_id = '{job.id}' and status <> 'pending'"
        )

    with worker(worker_env, log) as proc:
        check = alive(proc, log)

        async def under_way() -> bool:
            check()
            return await settled() > 0

        await wait_for(under_way, timeout=120, interval=0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    halfway = await bulk.get(runtime, job.id)
    assert 0 < halfway.done < ORDERS, "the kill should land mid-job"
    assert halfway.status == "running"
    # What committed is consistent: every settled item's order is cancelled, no other is.
    cancelled = "select count(*) from instances where status = 'cancelled'"
    assert await count(db, cancelled) == halfway.done == await settled()

    with worker(worker_env, log) as proc:
        check = alive(proc, log)

        async def completed() -> bool:
            check()
            return (await bulk.get(runtime, job.id)).status == "completed"

        try:
            await wait_for(completed, timeout=300, interval=0.2)
        except AssertionError as exc:
            stuck = await bulk.get(runtime, job.id)
            raise AssertionError(
                f"{exc}; {stuck}; worker log:\n{log.read_text()[-5000:]}"
            ) from None
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(proc.wait, 25)
    assert returncode == 0, log.read_text()[-3000:]
    done = await bulk.get(runtime, job.id)
    assert (done.succeeded, done.skipped, done.failed) == (ORDERS, 0, 0)
    assert await count(db, cancelled) == ORDERS
    # Exactly one cancel per order: one conveyor.cancel history row each, all applied.
    assert (
        await count(
            db,
            "select count(*) from (select instance_id from history"
            " where event_type = 'conveyor.cancel' group by instance_id"
            " having count(*) = 1) once",
        )
        == ORDERS
    )
    assert await count(db, "select count(*) from history where event_type = 'conveyor.cancel'") == (
        ORDERS
    )


def conveyor(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        CONVEYOR_DATABASE_SCHEMA=settings.database_schema or "",
        CONVEYOR_TOPIC_PREFIX=settings.topic_prefix,
        CONVEYOR_LOG_FORMAT="json",
    )
    return subprocess.run(
        [CONVEYOR, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_cli_counts_asks_and_cancels_with_a_progress_bar(
    settings: Settings, db: AsyncEngine
) -> None:
    runtime = order_runtime(db, settings)
    await start_orders(runtime, "cli", 300)
    await start_orders(runtime, "keep", 5)
    bad = await asyncio.to_thread(
        conveyor, settings, "instances", "cancel", "--filter", "colour=red"
    )
    assert bad.returncode == 2
    assert "unknown filter 'colour'" in bad.stderr
    empty = await asyncio.to_thread(conveyor, settings, "instances", "cancel", "--yes")
    assert empty.returncode == 2
    assert "--all" in empty.stderr

    args = (
        "instances",
        "cancel",
        "--filter",
        "workflow=order",
        "--filter",
        "business_key_prefix=cli-",
    )
    dry = await asyncio.to_thread(conveyor, settings, *args, "--dry-run")
    assert (dry.returncode, dry.stdout.strip()) == (0, "300"), dry.stderr
    assert "300 instances match" in dry.stderr
    # No terminal and no --yes: refused, nothing created.
    refused = await asyncio.to_thread(conveyor, settings, *args, stdin="y\n")
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    assert await count(db, "select count(*) from jobs") == 0

    done = await asyncio.to_thread(conveyor, settings, *args, "--reason", "cli test", "--yes")
    assert done.returncode == 0, done.stderr
    assert "succeeded 300 skipped 0 failed 0" in done.stderr
    assert "[##############################] 300/300" in done.stderr
    assert done.stdout.strip().endswith("completed: 300 succeeded, 0 skipped, 0 failed")
    cancelled = "select count(*) from instances where status = 'cancelled'"
    assert await count(db, cancelled) == 300
    job_id = done.stdout.split()[1]

    retried = await asyncio.to_thread(
        conveyor, settings, "instances", "retry", "--filter", "status=failed", "--yes"
    )
    assert retried.returncode == 0, retried.stderr
    assert "0 instances match" in retried.stderr
    assert "nothing to do" in retried.stderr

    shown = await asyncio.to_thread(conveyor, settings, "instances", "job", job_id)
    assert shown.returncode == 0, shown.stderr
    assert '"status": "completed"' in shown.stdout
    assert '"succeeded": 300' in shown.stdout

    detached = await asyncio.to_thread(
        conveyor, settings, "instances", "cancel", "--all", "--yes", "--detach"
    )
    assert detached.returncode == 0, detached.stderr
    job = await bulk.get(runtime, uuid.UUID(detached.stdout.strip()))
    assert (job.status, job.total) == ("running", 305)
