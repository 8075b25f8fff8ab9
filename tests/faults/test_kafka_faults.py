"""Kafka and worker processes go away: the broker stops and starts under load, a worker is
killed with SIGKILL mid-stream beside another, and an idle standby relay must not spin.
No event is lost or applied twice, and the outbox drains in order per key."""

from __future__ import annotations

import asyncio
import signal
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from tests.conftest import wait_for
from tests.faults.support import (
    Load,
    Worker,
    all_delivered,
    assert_each_event_applied_once,
    assert_outbox_drained_in_order,
    consuming,
    cpu_seconds,
    kafka_answers,
    scalar,
    stack,
    stop_gracefully,
    worker,
)

pytestmark = pytest.mark.usefixtures("topics_removed")


async def history_rows(db: AsyncEngine) -> int:
    return int(await scalar(db, "select count(*) from history"))


async def more_than(db: AsyncEngine, rows: int) -> bool:
    return await history_rows(db) > rows


async def test_a_worker_carries_on_after_the_broker_stops_and_starts_under_load(
    settings: Settings, db: AsyncEngine, tmp_path: Path
) -> None:
    keys = [f"broker-{i}" for i in range(40)]
    with worker(settings, tmp_path / "worker.log") as w:
        await consuming(w)
        load = Load(settings, keys, pause=0.15)
        load.start()
        await wait_for(partial(more_than, db, 40), timeout=30)
        await stack("kafka-stop")
        assert not await kafka_answers(settings), "the broker must really be down"
        before = await history_rows(db)
        await stack("kafka-start")
        await load.finished(timeout=120)  # the producer resends what the stop cut off
        await all_delivered(db, len(keys), w, timeout=90)
        assert await history_rows(db) > before
        await assert_outbox_drained_in_order(db, settings, w, timeout=60)
        status, health = await w.health()
        assert status == 200, health
        assert w.logged("worker started") == 1, "the worker must not have restarted"
        await stop_gracefully(w)
    await assert_each_event_applied_once(db, len(keys))


async def test_a_worker_killed_beside_another_loses_and_doubles_nothing(
    settings: Settings, db: AsyncEngine, tmp_path: Path
) -> None:
    keys = [f"kill9-{i}" for i in range(40)]
    with (
        worker(settings, tmp_path / "first.log") as first,
        worker(settings, tmp_path / "second.log") as second,
    ):
        await consuming(first, second)
        await _shared(first, second)
        load = Load(settings, keys, pause=0.15)
        load.start()
        await wait_for(partial(more_than, db, 60), timeout=30)
        assert load.task is not None
        assert not load.task.done(), "the kill must land mid-stream"
        first.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.proc.wait, 10)
        # The survivor takes the dead member's partitions once its session expires (10 s),
        # and the relay's lock once the dead one's session closes.
        await load.finished()
        await all_delivered(db, len(keys), second, timeout=90)
        await assert_outbox_drained_in_order(db, settings, second, timeout=60)
        assert (await second.health())[0] == 200
        await stop_gracefully(second)
    assert first.proc.returncode == -signal.SIGKILL
    await assert_each_event_applied_once(db, len(keys))


async def _shared(*workers: Worker) -> None:
    """Wait until the group has settled with every worker holding some partitions."""

    async def settled() -> bool:
        reports = [await w.health() for w in workers]
        return all(body["consumer"]["assigned_partitions"] > 0 for _status, body in reports)

    await wait_for(settled, timeout=30, interval=0.2)


async def test_an_idle_standby_relay_does_not_spin(
    settings: Settings, db: AsyncEngine, tmp_path: Path
) -> None:
    """Every worker runs a relay; the standbys must sleep between lock attempts even
    after outbox notifications woke them (it once cost 60 % of a core each)."""
    keys = [f"idle-{i}" for i in range(5)]
    with (
        worker(settings, tmp_path / "first.log") as first,
        worker(settings, tmp_path / "second.log") as second,
    ):
        await consuming(first, second)
        load = Load(settings, keys, pause=0.0)
        load.start()
        await load.finished()
        await all_delivered(db, len(keys), first, second, timeout=60)
        await assert_outbox_drained_in_order(db, settings, first, second)
        leaders = [(await w.health())[1]["relay"]["leader"] for w in (first, second)]
        assert sorted(leaders) == [False, True], "one leader and one standby"
        standby = (first, second)[leaders.index(False)]
        # Measure both over a few idle seconds: a measurement window, not synchronisation.
        window = 5.0
        used_before = {w.proc.pid: cpu_seconds(w.proc.pid) for w in (first, second)}
        await asyncio.sleep(window)
        used = {pid: cpu_seconds(pid) - cpu for pid, cpu in used_before.items()}
        await stop_gracefully(first, second)
    # An idle worker polls Kafka, the timers and the lock: a few percent of a core.
    assert used[standby.proc.pid] / window < 0.15, used
    assert max(used.values()) / window < 0.15, used
