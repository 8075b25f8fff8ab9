"""What the fault tests share: the stack manager's fault commands, real `conveyor worker`
processes with their health endpoints, a steady producer of order events, a TCP proxy
that can cut one process off from PostgreSQL, and the checks every scenario ends with
(each event applied once, every state change published in order per key)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.messaging.clients import create_producer
from engine.settings import Settings
from tests.conftest import wait_for
from tests.e2e.http_support import free_port, process_env
from tests.e2e.test_worker_process import worker as worker_process
from tests.integration.test_worker import ORDER_TO_DELIVERED, consume, order_events

ROOT = Path(__file__).resolve().parents[2]
EVENTS_PER_ORDER = len(ORDER_TO_DELIVERED)  # the start and six events


async def stack(*args: str) -> None:
    """Run ``stack/stack.py`` (the project's own stack manager) with ``args``."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "stack" / "stack.py"), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"stack.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


# ---------------------------------------------------------------------------- processes


@dataclass
class Worker:
    """A running `conveyor worker` process and where to ask about it."""

    proc: subprocess.Popen[bytes]
    log: Path
    health_port: int

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"worker exited {self.proc.returncode}:\n{self.log.read_text()[-4000:]}"
            )

    def logged(self, event: str) -> int:
        """How many JSON log lines carry this ``event``."""
        return self.log.read_text().count(f'"event":"{event}"')

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=3) as client:
            response = await client.get(f"http://127.0.0.1:{self.health_port}/health")
        return response.status_code, response.json()


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        CONVEYOR_DATABASE_URL=settings.database_url,
        CONVEYOR_DATABASE_SCHEMA=settings.database_schema or "",
        CONVEYOR_TOPIC_PREFIX=settings.topic_prefix,
        CONVEYOR_CONSUMER_GROUP=settings.consumer_group,
        CONVEYOR_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        CONVEYOR_LOG_FORMAT="json",
    )
    env.update(extra)
    return env


@contextmanager
def worker(settings: Settings, log: Path, *args: str, **extra_env: str) -> Iterator[Worker]:
    """A worker process with a health endpoint; killed on the way out if still running."""
    port = free_port()
    env = worker_env(settings, CONVEYOR_WORKER_HEALTH_PORT=str(port), **extra_env)
    with worker_process(env, log, *args) as proc:
        yield Worker(proc, log, port)


@contextmanager
def api_process(settings: Settings, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`conveyor api` on a free port, logging to ``log``; yields (base URL, process)."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "api"],
            env=process_env(settings, port),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def consuming(*workers: Worker, timeout: float = 30) -> None:
    """Wait until each worker has been assigned partitions at least once."""

    async def assigned() -> bool:
        for w in workers:
            w.check_alive()
        return all(w.logged("partitions assigned") for w in workers)

    await wait_for(assigned, timeout=timeout)


async def stop_gracefully(*workers: Worker) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.proc.terminate()
    for w in workers:
        code = await asyncio.to_thread(w.proc.wait, 30)
        assert code == 0, f"worker exited {code}:\n{w.log.read_text()[-3000:]}"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


async def kafka_answers(settings: Settings) -> bool:
    """Whether anything accepts connections at the first bootstrap server."""
    host, _, port = settings.kafka_servers()[0].rpartition(":")
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


# ---------------------------------------------------------------------------- load


@dataclass
class Load:
    """Orders produced over time, each from placed to delivered; the producer reconnects
    by itself when the broker goes away (messages it could not send are sent again)."""

    settings: Settings
    keys: list[str]
    pause: float = 0.05
    sent: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def topic(self) -> str:
        return f"{self.settings.topic_prefix}.in"

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def finished(self, timeout: float = 120) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout)

    async def _run(self) -> None:
        # Orders interleaved, so that every partition keeps getting events throughout.
        groups = [order_events(k) for k in self.keys]
        messages = [m for step in zip(*groups, strict=True) for m in step]
        chunk = max(1, len(self.keys) // 4)
        for start in range(0, len(messages), chunk):
            await self._send(messages[start : start + chunk])
            self.sent += len(messages[start : start + chunk])
            await asyncio.sleep(self.pause)  # pacing of the load, not synchronisation

    async def _send(self, messages: Sequence[Any]) -> None:
        """Send and wait for every acknowledgement, retrying the chunk while Kafka is away
        (a repeat is harmless: the events carry ids)."""
        deadline = time.monotonic() + 90
        while True:
            producer = create_producer(self.settings)
            try:
                await producer.start()
                futures = [
                    await producer.send(self.topic, value=v, key=k, headers=h)
                    for _t, k, v, h in messages
                ]
                for future in futures:
                    await future
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)  # the broker is restarting: try again shortly
            finally:
                with contextlib.suppress(Exception):
                    await producer.stop()


# ---------------------------------------------------------------------------- checks


async def scalar(db: AsyncEngine, sql: str, **params: Any) -> Any:
    async with db.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def delivered(db: AsyncEngine) -> int:
    return int(await scalar(db, "select count(*) from instances where state = 'delivered'"))


async def all_delivered(db: AsyncEngine, want: int, *workers: Worker, timeout: float) -> float:
    """Wait until ``want`` orders are delivered; return how long it took."""
    started = time.monotonic()

    async def done() -> bool:
        for w in workers:
            w.check_alive()
        try:
            return await delivered(db) == want
        except Exception:  # this test's own connection may meet the fault too
            return False

    await wait_for(done, timeout=timeout, interval=0.2)
    return time.monotonic() - started


async def timers_fire(db: AsyncEngine, want: int, *workers: Worker, timeout: float) -> None:
    """Bring every delivered order's return-window timer due now, and wait until the
    workers' schedulers have fired them all (the orders complete)."""
    async with db.begin() as conn:
        await conn.execute(text("update timers set due_at = now() where name = 'return_window'"))

    async def completed() -> bool:
        for w in workers:
            w.check_alive()
        count = "select count(*) from instances where state = 'completed'"
        return int(await scalar(db, count)) == want

    await wait_for(completed, timeout=timeout, interval=0.2)


async def progress_after(db: AsyncEngine, *workers: Worker, timeout: float) -> float:
    """Seconds until one more history row is written than now (the worker progresses)."""
    before = int(await scalar(db, "select count(*) from history"))
    started = time.monotonic()

    async def more() -> bool:
        for w in workers:
            w.check_alive()
        return int(await scalar(db, "select count(*) from history")) > before

    await wait_for(more, timeout=timeout, interval=0.1)
    return time.monotonic() - started


async def assert_each_event_applied_once(db: AsyncEngine, orders: int) -> None:
    """One history row per produced event (and per fired timer), none missing."""
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "select event_id, source = 'timer', count(*) from history"
                    " group by event_id, source = 'timer'"
                )
            )
        ).all()
        instances = (await conn.execute(text("select count(*) from instances"))).scalar_one()
    doubled = [(row[0], row[2]) for row in rows if row[2] != 1]
    assert not doubled, f"events or timers recorded more than once: {doubled[:10]}"
    assert instances == orders
    events = [row[0] for row in rows if not row[1]]
    assert len(events) == orders * EVENTS_PER_ORDER, "events lost"


async def assert_outbox_drained_in_order(
    db: AsyncEngine, settings: Settings, *workers: Worker, timeout: float = 30
) -> None:
    """Every state change is published, and per business key in revision order.

    Delivery is at least once: a batch the relay sent just before a fault may be sent
    again, so repeats (same CloudEvent id) are dropped before comparing.
    """

    async def drained() -> bool:
        for w in workers:
            w.check_alive()
        return int(await scalar(db, "select count(*) from outbox where published_at is null")) == 0

    await wait_for(drained, timeout=timeout, interval=0.2)
    topic = f"{settings.topic_prefix}.instances"
    want = int(await scalar(db, "select count(*) from outbox where topic = :t", t=topic))
    records = await consume(settings, topic, want, timeout=30)
    seen: set[str] = set()
    revisions: dict[str, list[int]] = defaultdict(list)
    for record in records:
        event = orjson.loads(record.value)
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        revisions[event["data"]["business_key"]].append(event["data"]["revision"])
    assert len(seen) == want, f"published {len(seen)} distinct state changes of {want}"
    disordered = {k: r for k, r in revisions.items() if r != sorted(r)}
    assert not disordered, f"out of order per key: {list(disordered.items())[:5]}"


# ---------------------------------------------------------------------------- a cut-off


class PostgresProxy:
    """A TCP proxy to PostgreSQL for one process: ``cut()`` drops every connection through
    it and refuses new ones (that process alone loses the database); ``restore()`` ends
    the cut."""

    def __init__(self, target_port: int = 5432) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut_off = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def url(self, settings: Settings) -> str:
        return settings.database_url.replace(f":{self.target_port}/", f":{self.port}/")

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.cut_off = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self._writers -= {writer, up_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


@asynccontextmanager
async def postgres_proxy() -> AsyncIterator[PostgresProxy]:
    proxy = PostgresProxy()
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
