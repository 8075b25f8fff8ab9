"""PostgreSQL goes away: restarted (fast and immediate), its sessions killed, stopped under
the API, or cut off from one worker only. Every process carries on by itself, no event is
lost or applied twice, and the outbox drains in order per key."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from tests.conftest import wait_for
from tests.e2e.http_support import make_keys, order_data
from tests.faults.support import (
    Load,
    Worker,
    all_delivered,
    api_process,
    assert_each_event_applied_once,
    assert_outbox_drained_in_order,
    consuming,
    postgres_proxy,
    progress_after,
    scalar,
    stack,
    stop_gracefully,
    timers_fire,
    worker,
)

pytestmark = pytest.mark.usefixtures("topics_removed")

# After PostgreSQL is back, a worker must apply events again within this many seconds
# (its retries back off to 2 s at the most).
RECOVERY_BOUND = 10.0
LEFT_GROUP = "left the consumer group: the database has been unreachable too long"
STOOD_DOWN = "outbox relay stands down: the database has been unreachable too long"


async def history_rows(db: AsyncEngine) -> int:
    return int(await scalar(db, "select count(*) from history"))


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_worker_recovers_from_postgres_restarts_idle_and_under_load(
    mode: str, settings: Settings, db: AsyncEngine, tmp_path: Path
) -> None:
    keys = [f"restart-{mode}-{i}" for i in range(40)]
    with worker(settings, tmp_path / "worker.log") as w:
        await consuming(w)
        # Restarted while the worker is idle: its pooled connections all die unused.
        await stack("pg-restart", mode)
        load = Load(settings, keys, pause=0.15)
        load.start()
        await wait_for(lambda: _more_than(db, 40), timeout=30)
        assert load.task is not None
        assert not load.task.done(), "the fault must land mid-load"
        # ... and again in the middle of the stream.
        await stack("pg-restart", mode)
        recovered_in = await progress_after(db, w, timeout=RECOVERY_BOUND)
        await load.finished()
        await all_delivered(db, len(keys), w, timeout=60)
        await timers_fire(db, len(keys), w, timeout=RECOVERY_BOUND)  # the scheduler too
        await assert_outbox_drained_in_order(db, settings, w)
        status, health = await w.health()
        assert status == 200, health
        assert health["database"]["reachable"] is True
        assert w.logged("worker started") == 1, "the worker must not have restarted"
        await stop_gracefully(w)
    assert recovered_in < RECOVERY_BOUND
    await assert_each_event_applied_once(db, len(keys))


async def _more_than(db: AsyncEngine, rows: int) -> bool:
    return await history_rows(db) > rows


async def test_killed_database_sessions_are_replaced_under_load(
    settings: Settings, db: AsyncEngine, tmp_path: Path
) -> None:
    keys = [f"kill-{i}" for i in range(40)]
    with worker(settings, tmp_path / "worker.log") as w:
        await consuming(w)
        load = Load(settings, keys, pause=0.15)
        load.start()
        for round_ in range(3):
            rows = 30 + 60 * round_
            await wait_for(partial(_more_than, db, rows), timeout=30)
            killed = await _terminate_conveyor_sessions(db)
            assert killed > 0
            await progress_after(db, w, timeout=RECOVERY_BOUND)
        await load.finished()
        await all_delivered(db, len(keys), w, timeout=60)
        await timers_fire(db, len(keys), w, timeout=RECOVERY_BOUND)
        await assert_outbox_drained_in_order(db, settings, w)
        assert (await w.health())[0] == 200
        assert w.logged("worker started") == 1
        await stop_gracefully(w)
    await assert_each_event_applied_once(db, len(keys))


async def _terminate_conveyor_sessions(db: AsyncEngine) -> int:
    """``pg_terminate_backend`` on every Conveyor session but this one (the worker's pool,
    its relay listener, and this test's own pool)."""
    async with db.connect() as conn:
        result = await conn.execute(
            text(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity"
                " where application_name like 'conveyor%' and datname = current_database()"
                " and pid <> pg_backend_pid()"
            )
        )
        return int(result.scalar_one())


async def test_the_api_answers_503_while_postgres_is_down_and_recovers_by_itself(
    settings: Settings, tmp_path: Path
) -> None:
    keys = await make_keys(settings)
    log = tmp_path / "api.log"
    headers = {"Authorization": f"Bearer {keys.write}"}
    with api_process(settings, log) as (base, proc):
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:

            async def up() -> bool:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up, timeout=30)
            started = await client.post(
                "/v1/workflows/order/instances",
                json={"business_key": "down-1", "data": order_data("down-1")},
            )
            assert started.status_code == 201, started.text
            instance = started.json()["id"]

            await stack("pg-stop", "immediate")
            while_down = [
                await client.get(f"/v1/instances/{instance}"),
                await client.post(
                    f"/v1/instances/{instance}/events",
                    json={"type": "payment.initiated", "payload": {"payment_id": "p"}},
                ),
                await client.get("/v1/instances", params={"workflow": "order"}),
            ]
            for answer in while_down:
                assert answer.status_code == 503, answer.text
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.headers["retry-after"]
                assert answer.json()["status"] == 503

            await stack("pg-start")
            back = time.monotonic()
            statuses: list[int] = []

            async def answers() -> bool:
                status = (await client.get(f"/v1/instances/{instance}")).status_code
                statuses.append(status)
                return status == 200

            # No call to /ready (which used to be what repaired the pool): plain requests.
            await wait_for(answers, timeout=RECOVERY_BOUND, interval=0.1)
            assert time.monotonic() - back < RECOVERY_BOUND
            assert set(statuses) <= {200, 503}, statuses
    output = log.read_text()
    assert "Traceback" not in output, output[-3000:]
    assert "dependency unavailable" in output


async def test_a_worker_cut_off_from_postgres_hands_over_its_partitions_and_relay(
    settings: Settings, db: AsyncEngine, tmp_path: Path
) -> None:
    """One worker loses the database while another keeps it: the cut-off one must not sit
    on its partitions or the relay's lock; it comes back when the database does."""
    keys = [f"cut-{i}" for i in range(30)]
    async with postgres_proxy() as proxy:
        cut_settings = settings.model_copy(update={"database_url": proxy.url(settings)})
        with worker(
            cut_settings, tmp_path / "cut.log", CONVEYOR_DATABASE_OUTAGE_SECONDS="3"
        ) as cut:
            await consuming(cut)
            await wait_for(_leads(cut), timeout=15)  # the cut-off one holds the relay lock
            with worker(settings, tmp_path / "healthy.log") as healthy:
                await consuming(healthy)
                load = Load(settings, keys, pause=0.2)
                load.start()
                await wait_for(lambda: _more_than(db, 20), timeout=30)
                proxy.cut()

                async def gave_up() -> bool:
                    cut.check_alive()
                    return bool(cut.logged(LEFT_GROUP) and cut.logged(STOOD_DOWN))

                await wait_for(gave_up, timeout=20)
                status, health = await cut.health()
                assert status == 503, health
                assert health["database"]["reachable"] is False
                assert health["consumer"]["consumer_in_group"] is False
                # The healthy worker now has every partition and the relay: all of it flows.
                await load.finished()
                await all_delivered(db, len(keys), healthy, cut, timeout=60)
                await assert_outbox_drained_in_order(db, settings, healthy, cut)
                assert (await healthy.health())[0] == 200

                proxy.restore()

                async def back() -> bool:
                    cut.check_alive()
                    status, body = await cut.health()
                    return status == 200 and body["consumer"]["consumer_in_group"] is True

                await wait_for(back, timeout=20)
                assert cut.logged("rejoining the consumer group") >= 1
                await stop_gracefully(cut, healthy)
    await assert_each_event_applied_once(db, len(keys))


def _leads(w: Worker) -> Callable[[], Awaitable[bool]]:
    async def leads() -> bool:
        w.check_alive()
        return bool(w.logged("outbox relay is the leader"))

    return leads
