"""The outbox relay: publish what transactions wrote to the outbox, in order, once each.

Ordering. One relay per schema publishes at a time: the leader holds a session-level
advisory lock on its dedicated listener connection; the others stand by and retry the
lock each poll, so a crashed leader is replaced as soon as its connection closes. The
leader claims the oldest unpublished rows in id order (``FOR UPDATE SKIP LOCKED``, belt
and braces), sends them in that order with the idempotent producer (per-partition order
kept across retries), waits for every acknowledgement, then marks them published in the
same transaction. Rows of one instance get increasing ids in commit order (the instance
row lock serialises their transactions), so each instance's messages arrive in order.

Delivery is at least once: a crash between the broker's acknowledgement and the commit
publishes the batch again; consumers deduplicate by the CloudEvent id (``message_id``).

Wake-ups. ``LISTEN conveyor_outbox``: the outbox trigger notifies with the schema name at
commit; notifications for other schemas are ignored. NOTIFY is only a hint, so the relay
also polls every ``poll_interval`` seconds. Only the leader wakes early: a standby just
retries the lock each poll, and a failed round always waits out its backoff.

Outages. When PostgreSQL has been unreachable for longer than the worker's bound
(:class:`engine.liveness.DatabaseOutage`), the relay closes its listener session, which
drops the leader lock, and tries to lead again only once the database answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.liveness import DatabaseOutage
from engine.messaging.batches import KeyPartitioner, PartitionBatches
from engine.messaging.clients import create_producer
from engine.messaging.metrics import WorkerMetrics
from engine.messaging.waits import first_of
from engine.observability import get_logger
from engine.settings import Settings
from engine.store.database import driver_transaction, ping
from engine.store.outbox import CLAIM_UNPUBLISHED, MARK_PUBLISHED, TRY_LEAD
from engine.transient import is_database_unavailable, is_transient

log = get_logger("conveyor.relay")

CHANNEL = "conveyor_outbox"

ProducerFactory = Callable[[Settings], AIOKafkaProducer]


def _default_producer(settings: Settings) -> AIOKafkaProducer:
    return create_producer(settings, client_id="conveyor-relay")


class OutboxRelay:
    """Publishes unpublished outbox rows until stopped."""

    def __init__(
        self,
        db: AsyncEngine,
        settings: Settings,
        *,
        metrics: WorkerMetrics | None = None,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retry_max: float = 2.0,
        producer_factory: ProducerFactory = _default_producer,
        outage: DatabaseOutage | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.outage = outage or DatabaseOutage(settings.database_outage_seconds)
        self.metrics = metrics or WorkerMetrics()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_max = retry_max
        self.schema = settings.database_schema or "public"
        self._producer_factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._listener: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._partitioner = KeyPartitioner()
        self._stood_down = False  # gave up leading for an outage; until the database answers
        self.leader = False

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; the batch in flight is finished first."""
        log.info("outbox relay started", schema=self.schema)
        delay = self.poll_interval
        try:
            while not stop.is_set():
                try:
                    published = await self.step()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    self.metrics.relay_errors += 1
                    log.warning(
                        "outbox relay round failed; retrying",
                        error=f"{type(exc).__name__}: {exc}",
                        retry_in=delay,
                    )
                    await self._reset(kafka=isinstance(exc, KafkaError))
                    if not isinstance(exc, KafkaError) and is_database_unavailable(exc):
                        self.outage.failed(exc)
                    if self.outage.exceeded and not self._stood_down:
                        await self._stand_down()
                    await self._sleep(stop, delay, wake=False)  # the backoff is kept
                    delay = min(delay * 2, self.retry_max)
                    continue
                delay = self.poll_interval
                if published >= self.batch_size:
                    continue  # more are probably waiting
                await self._sleep(stop, self.poll_interval, wake=self.leader)
        finally:
            await self.close()
            log.info("outbox relay stopped", published=self.metrics.outbox_published)

    async def step(self) -> int:
        """Make sure we listen, try to lead, and publish one batch if leading."""
        self._wake.clear()  # whatever a notification announced, this round will see
        if self._stood_down:
            # Lead again only once the pool can reach the database (a listener session
            # alone may work while the pool's connections do not).
            await ping(self.db, timeout=2.0)
            self.outage.succeeded()
            self._stood_down = False
            log.info("outbox relay may lead again: the database answers")
        listener = await self._listen()
        if not self.leader:
            self.leader = bool(await listener.fetchval(TRY_LEAD, self.schema))
            self.metrics.relay_leader = self.leader
            if self.leader:
                log.info("outbox relay is the leader", schema=self.schema)
        if not self.leader:
            return 0
        published = await self.publish_batch()
        self.outage.succeeded()
        return published

    async def publish_batch(self) -> int:
        """Publish the oldest unpublished rows (up to ``batch_size``); return how many."""
        async with driver_transaction(self.db) as conn:
            rows = await conn.fetch(CLAIM_UNPUBLISHED, self.batch_size)
            if not rows:
                return 0
            await self._send(rows)
            await conn.execute(MARK_PUBLISHED, datetime.now(UTC), [r["id"] for r in rows])
        self.metrics.outbox_published += len(rows)
        return len(rows)

    async def _send(self, rows: Sequence[asyncpg.Record]) -> None:
        """Send the rows as record batches per partition, in id order (each key in the
        partition ``send(key=...)`` would pick), and wait for every acknowledgement."""
        batches = PartitionBatches(await self._ensure_producer(), self._partitioner)
        for row in rows:
            key = None if row["key"] is None else bytes(row["key"])
            await batches.add(row["topic"], key, bytes(row["value"]), _headers(row["headers"]))
        for acknowledgement in await batches.send():
            await acknowledgement

    # ------------------------------------------------------------------ connections

    async def _listen(self) -> asyncpg.Connection:
        if self._listener is not None and not self._listener.is_closed():
            return self._listener
        self.leader = False  # a new session holds no lock
        self.metrics.relay_leader = False
        url = make_url(self.settings.database_url).set(drivername="postgresql")
        conn: asyncpg.Connection = await asyncpg.connect(
            url.render_as_string(hide_password=False),
            timeout=5,
            server_settings={"application_name": "conveyor-relay"},
        )
        await conn.add_listener(CHANNEL, self._notified)
        self._listener = conn
        return conn

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == self.schema:
            self._wake.set()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._producer_factory(self.settings)
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _reset(self, *, kafka: bool) -> None:
        """Drop what may be broken: the producer after a Kafka error (a producer can stay
        closed after NodeNotReadyError), the listener if its connection is gone."""
        if kafka:
            producer, self._producer = self._producer, None
            if producer is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await producer.stop()
        listener = self._listener
        if listener is not None and listener.is_closed():
            self._listener = None  # its session, and so the leader lock, is gone
            self.leader = False
            self.metrics.relay_leader = False

    async def _stand_down(self) -> None:
        """Give up the leadership (close the listener session, which holds the lock), so
        that a relay that can reach the database takes over; try to lead again only once
        the database answers."""
        log.error(
            "outbox relay stands down: the database has been unreachable too long",
            outage_seconds=round(self.outage.seconds, 1),
            was_leader=self.leader,
        )
        self._stood_down = True
        listener, self._listener = self._listener, None
        self.leader = False
        self.metrics.relay_leader = False
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await listener.close(timeout=2)
            if not listener.is_closed():
                listener.terminate()

    async def close(self) -> None:
        await self._reset(kafka=True)
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(OSError, TimeoutError, asyncpg.InterfaceError):
                await listener.close(timeout=2)  # releases the leader lock
        self.leader = False
        self.metrics.relay_leader = False

    async def _sleep(self, stop: asyncio.Event, seconds: float, *, wake: bool) -> None:
        """Wait for ``stop`` or the timeout, and with ``wake`` for a notification too."""
        if not wake:
            await first_of([stop.wait()], timeout=seconds)
            return
        if self._wake.is_set():
            return
        await first_of([stop.wait(), self._wake.wait()], timeout=seconds)


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    """The outbox keeps headers as JSON ``[[name, value], ...]``."""
    pairs = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return [(str(name), str(value).encode()) for name, value in pairs or ()]


__all__ = ["CHANNEL", "OutboxRelay"]
