"""A `conveyor worker` process, killed with SIGKILL mid-stream and restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from tests.conftest import wait_for
from tests.integration.test_worker import history_counts, order_events, produce

ORDERS = 60


@pytest.fixture
async def worker_env(
    settings: Settings, kafka_admin: AIOKafkaAdminClient
) -> AsyncIterator[dict[str, str]]:
    env = dict(
        os.environ,
        CONVEYOR_DATABASE_SCHEMA=settings.database_schema or "",
        CONVEYOR_TOPIC_PREFIX=settings.topic_prefix,
        CONVEYOR_CONSUMER_GROUP=settings.consumer_group,
        CONVEYOR_LOG_FORMAT="json",
    )
    yield env
    names = [t for t in await kafka_admin.list_topics() if t.startswith(settings.topic_prefix)]
    if names:
        await kafka_admin.delete_topics(names)


@contextmanager
def worker(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process logging to ``log``; killed on the way out if still running."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


async def count(db: AsyncEngine, sql: str) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


def alive(proc: subprocess.Popen[bytes], log: Path) -> Callable[[], None]:
    def check() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode}:\n{log.read_text()[-3000:]}")

    return check


async def test_a_worker_killed_mid_stream_and_restarted_applies_every_event_once(
    settings: Settings, db: AsyncEngine, worker_env: dict[str, str], tmp_path: Path
) -> None:
    topic = f"{settings.topic_prefix}.in"
    keys = [f"o-{i}" for i in range(ORDERS)]
    first_half = [m for k in keys[: ORDERS // 2] for m in order_events(k)]
    second_half = [m for k in keys[ORDERS // 2 :] for m in order_events(k)]
    log = tmp_path / "worker.log"

    with worker(worker_env, log) as proc:
        check = alive(proc, log)

        async def consuming() -> bool:
            check()
            return '"event":"partitions assigned"' in log.read_text()

        await wait_for(consuming, timeout=30)
        await produce(settings, topic, first_half)

        async def some_progress() -> bool:
            check()
            return await count(db, "select count(*) from history") > 0

        await wait_for(some_progress, timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    done_before = await count(db, "select count(*) from instances where state = 'delivered'")

    await produce(settings, topic, second_half)  # while no worker runs
    with worker(worker_env, log) as proc:
        check = alive(proc, log)

        async def all_delivered() -> bool:
            check()
            return (
                await count(db, "select count(*) from instances where state = 'delivered'")
                == ORDERS
            )

        # The group waits for the killed member's session to expire (10 s) before
        # handing its partitions to the new process.
        await wait_for(all_delivered, timeout=45)
        await wait_for(
            lambda: _outbox_drained(db, check), timeout=15
        )  # the relay published every state change
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(proc.wait, 25)
    assert returncode == 0, log.read_text()[-3000:]
    assert done_before < ORDERS, "the kill should land mid-stream"
    counts = await history_counts(db)
    assert len(counts) == ORDERS * 7  # 6 events per order + its start
    assert set(counts.values()) == {1}
    assert await count(db, "select count(*) from instances") == ORDERS
    assert '"event":"worker stopped"' in log.read_text()


async def _outbox_drained(db: AsyncEngine, check: Callable[[], None]) -> bool:
    check()
    return await count(db, "select count(*) from outbox where published_at is null") == 0


async def test_the_relay_can_run_in_a_process_of_its_own(
    settings: Settings, db: AsyncEngine, worker_env: dict[str, str], tmp_path: Path
) -> None:
    topic = f"{settings.topic_prefix}.in"
    keys = [f"s-{i}" for i in range(10)]
    consumer_log, relay_log = tmp_path / "consumer.log", tmp_path / "relay.log"
    with (
        worker(worker_env, consumer_log, "--services", "consumer,scheduler") as consumer,
        worker(worker_env, relay_log, "--services", "relay") as relay,
    ):
        consumer_alive, relay_alive = alive(consumer, consumer_log), alive(relay, relay_log)

        async def consuming() -> bool:
            consumer_alive()
            return '"event":"partitions assigned"' in consumer_log.read_text()

        await wait_for(consuming, timeout=30)
        await produce(settings, topic, [m for k in keys for m in order_events(k)])

        async def all_delivered() -> bool:
            consumer_alive()
            relay_alive()
            delivered = "select count(*) from instances where state = 'delivered'"
            return await count(db, delivered) == len(keys)

        await wait_for(all_delivered, timeout=45)
        await wait_for(lambda: _outbox_drained(db, relay_alive), timeout=15)
        for proc in (consumer, relay):
            proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(p.wait, 25) for p in (consumer, relay)]
    assert codes == [0, 0]
    # Each process ran what it was told to, and only that.
    assert '"services":["consumer","scheduler","metrics"]' in consumer_log.read_text()
    assert "outbox relay started" not in consumer_log.read_text()
    assert '"services":["relay","metrics"]' in relay_log.read_text()
    assert "consumer started" not in relay_log.read_text()


def test_an_unknown_worker_service_is_refused(worker_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "worker", "--services", "consumer,bogus"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--services" in done.stderr
    assert "bogus" in done.stderr
