"""The Kafka side of the worker: consume CloudEvents, apply them in batches, commit.

One batch at a time, while a fetch loop keeps reading ahead (together at most
``max_batch`` records fetched but not applied: the bound on work in flight; the buffer is
:mod:`engine.messaging.fetched`):

1. take what was fetched as a batch; decode and route each message
   (:mod:`engine.messaging.routing`);
2. run the batch's starts (concurrently across business keys, in order within one), then
   apply its events with one ``Runtime.send_many`` transaction (in order per instance):
   :mod:`engine.messaging.delivery`, which returns the dead letters;
3. record the dead letters (bad messages, invalid payloads, events for no instance) in
   PostgreSQL (``dead_letters``; a redelivered one updates its row), then publish them
   and wait for the broker's acknowledgement;
4. commit the batch's offsets to Kafka. Only now: a crash before this point redelivers the
   batch, and the inbox turns the redelivery into duplicates with no effect. The commit
   runs while the next batch is fetched and applied (one commit in flight at a time, so
   offsets land in order); stopping and rebalancing wait for it.

A transient failure (database or Kafka away) retries the same batch with backoff; a
rebalance waits briefly for the batch in flight and then lets it go (its commit may fail
with ``CommitFailedError``, which is logged and counted, never fatal). A watchdog logs a
consumer that stops polling or stops fetching while it has lag.

A database outage longer than the worker's bound (:class:`engine.liveness.DatabaseOutage`)
makes the consumer leave its group, so that healthy workers take its partitions; it
rejoins once PostgreSQL answers again. The batch in flight is given up uncommitted: its
new owner applies it, and the inbox makes any repeat a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from engine.liveness import DatabaseOutage
from engine.messaging import deadletter
from engine.messaging.clients import create_consumer, create_producer
from engine.messaging.delivery import BatchDelivery
from engine.messaging.fetched import Fetched, Record
from engine.messaging.metrics import WorkerMetrics
from engine.messaging.routing import Router
from engine.messaging.waits import first_of
from engine.observability import get_logger
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store import dead_letters
from engine.store.database import ping
from engine.transient import is_database_unavailable, is_transient

log = get_logger("conveyor.consumer")

BatchHook = Callable[[Sequence[Record]], None]


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """Tuning of the worker's consumer; the defaults suit production and tests alike."""

    max_batch: int = 4000  # records per batch: the bound on work in flight
    poll_timeout_ms: int = 200  # also how quickly a stop request is noticed
    lanes: int = 4  # groups of partitions applied concurrently (one transaction each)
    start_concurrency: int = 200  # starts in flight per lane (the runtime group-commits them)
    revoke_grace: float = 5.0  # how long a rebalance waits for the batch in flight
    retry_initial: float = 0.2  # backoff after a transient failure, doubling ...
    retry_max: float = 2.0  # ... up to this (also how soon a returning database is seen)
    stall_after: float = 60.0  # no poll, or lag without records, for this long: stalled
    watchdog_interval: float = 5.0
    rejoin_probe_interval: float = 1.0  # while out of the group: how often to ping PostgreSQL
    consumer_overrides: Mapping[str, Any] = field(
        default_factory=lambda: {"session_timeout_ms": 10000, "heartbeat_interval_ms": 1000}
    )


class _Abandoned(Exception):
    """The batch was given up (stopping, or its partitions were revoked)."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: EventConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._owner.partitions_assigned(assigned)


class EventConsumer:
    """Consumes the routed topics and applies their events through the runtime."""

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        router: Router,
        metrics: WorkerMetrics,
        *,
        options: ConsumerOptions | None = None,
        on_applied: BatchHook | None = None,
        on_committed: BatchHook | None = None,
        outage: DatabaseOutage | None = None,
    ) -> None:
        self.settings = settings
        self.outage = outage or DatabaseOutage(settings.database_outage_seconds)
        self.runtime = runtime
        self.router = router
        self.metrics = metrics
        self.options = options or ConsumerOptions()
        self._delivery = BatchDelivery(
            runtime,
            metrics,
            lanes=self.options.lanes,
            start_concurrency=self.options.start_concurrency,
        )
        self._on_applied = on_applied
        self._on_committed = on_committed
        self._commit_task: asyncio.Task[None] | None = None
        self._fetched: Fetched | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._revoked: set[TopicPartition] = set()
        self._stop = asyncio.Event()
        self._restart = asyncio.Event()
        self._leave = asyncio.Event()  # the database is away for too long: leave the group
        self._last_records_at = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; finish and commit the batch in flight first.

        A consumer that stops making progress (it polls but receives nothing while its
        partitions have lag, as aiokafka can after a broker restart) is replaced by a new
        one; committed work is safe, and anything redelivered is a duplicate.
        """
        self._stop = stop
        watchdog = asyncio.create_task(self._watchdog(stop), name="consumer-watchdog")
        try:
            while not stop.is_set():
                self._restart.clear()
                await self._consume(stop)
                if self._leave.is_set() and not stop.is_set():
                    await self._wait_for_database(stop)
                elif self._restart.is_set() and not stop.is_set():
                    self.metrics.consumer_restarts += 1
                    log.warning("restarting the stalled consumer")
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await self._drop_producer()
            log.info("consumer stopped")

    async def _wait_for_database(self, stop: asyncio.Event) -> None:
        """Out of the group (left because PostgreSQL is away): ping it until it answers,
        then return to rejoin."""
        self.metrics.consumer_in_group = False
        log.error(
            "left the consumer group: the database has been unreachable too long",
            outage_seconds=round(self.outage.seconds, 1),
            error=self.outage.last_error,
        )
        while not stop.is_set():
            try:
                await ping(self.runtime.db, timeout=2.0)
            except Exception as exc:
                self.outage.failed(exc)
                await first_of([stop.wait()], timeout=self.options.rejoin_probe_interval)
                continue
            self.outage.succeeded()
            break
        self._leave.clear()
        if not stop.is_set():
            log.info("rejoining the consumer group")

    async def _consume(self, stop: asyncio.Event) -> None:
        """One consumer's life: until ``stop``, or until the watchdog asks for a new one."""
        consumer = create_consumer(self.settings, **dict(self.options.consumer_overrides))
        consumer.subscribe(list(self.router.topics), listener=_Rebalance(self))
        self._consumer = consumer
        await consumer.start()
        self.metrics.last_poll_at = self._last_records_at = time.monotonic()
        self.metrics.consumer_in_group = True
        log.info("consumer started", topics=list(self.router.topics))
        fetched = Fetched(self.options.max_batch)
        self._fetched = fetched
        fetcher = asyncio.create_task(self._fetch_ahead(consumer, fetched, stop))
        try:
            while not stop.is_set() and not self._restart.is_set() and not self._leave.is_set():
                if not fetched.count:
                    await first_of(
                        [
                            fetched.ready.wait(),
                            stop.wait(),
                            self._restart.wait(),
                            self._leave.wait(),
                        ],
                        timeout=self.options.poll_timeout_ms / 1000,
                        also=fetcher,
                    )
                    if fetcher.done():
                        fetcher.result()  # the fetcher failed: raise its error here
                        return
                    continue
                await self.process(fetched.take())
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher
            try:
                await self._settle_commit()
            finally:
                self._fetched = None
                self._consumer = None
                await consumer.stop()  # leaves the group: its partitions go to the others
                self.metrics.assigned_partitions = 0
                self.metrics.partition_lag = {}

    async def _fetch_ahead(
        self, consumer: AIOKafkaConsumer, fetched: Fetched, stop: asyncio.Event
    ) -> None:
        """Keep fetching while a batch is applied, up to ``max_batch`` records ahead.

        aiokafka fetches a partition again only once what it buffered for it was taken,
        so taking records as they come keeps a fetch in flight: a record that arrives
        while a batch is applied is ready when that batch is done, instead of being
        fetched only then.
        """
        while not stop.is_set() and not self._restart.is_set() and not self._leave.is_set():
            room = fetched.limit - fetched.count
            if room <= 0:
                await first_of(
                    [fetched.room.wait(), stop.wait(), self._restart.wait()],
                    timeout=self.options.poll_timeout_ms / 1000,
                )
                continue
            batches = await consumer.getmany(
                timeout_ms=self.options.poll_timeout_ms, max_records=room
            )
            self.metrics.last_poll_at = time.monotonic()
            if batches:
                self._last_records_at = self.metrics.last_poll_at
                fetched.add(batches)

    async def _dlq_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = create_producer(self.settings, client_id="conveyor-deadletter")
            await producer.start()
            self._producer = producer
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()

    # ------------------------------------------------------------------ rebalancing

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Let the batch in flight finish (it commits its own offsets), within a bound;
        records fetched ahead for the revoked partitions are dropped (their new owner
        reads them from the committed offsets)."""
        self.metrics.rebalances += 1
        if self._fetched is not None:
            self._fetched.drop(revoked)
        if not self._idle.is_set() or self._commit_task is not None:
            try:
                async with asyncio.timeout(self.options.revoke_grace):
                    await self._idle.wait()
                    await self._settle_commit()
            except TimeoutError:
                # Redelivery to the new owner is harmless (inbox); don't hold the group up.
                self._revoked |= revoked
                log.warning(
                    "rebalance: dropping the batch in flight",
                    partitions=sorted(str(tp) for tp in revoked),
                )
        log.info("partitions revoked", partitions=len(revoked))

    def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._revoked -= assigned
        self.metrics.assigned_partitions = len(assigned)
        log.info("partitions assigned", partitions=sorted(str(tp) for tp in assigned))

    # ------------------------------------------------------------------ one batch

    async def process(self, batches: Mapping[TopicPartition, Sequence[Record]]) -> None:
        """Apply one ``getmany`` batch, dead-letter what cannot apply, commit the offsets."""
        records = [record for tp in batches for record in batches[tp]]
        self.metrics.messages += len(records)
        self._idle.clear()
        try:
            letters = await self._with_retries(records)
            if self._on_applied is not None:
                self._on_applied(records)
            # The offsets go to Kafka while the next batch is fetched and applied: at most
            # one commit in flight, so they land in order. Losing one (a crash) only
            # redelivers work the inbox already holds.
            await self._settle_commit()
            self._commit_task = asyncio.create_task(self._commit_batch(batches, records))
            self.metrics.batches += 1
            self.metrics.last_progress_at = time.monotonic()
        except _Abandoned:
            log.info("batch abandoned; it will be redelivered", records=len(records))
            return
        finally:
            self._idle.set()
        for reason, count in letters.items():
            self.metrics.dead_lettered[reason] += count

    async def _with_retries(self, records: Sequence[Record]) -> dict[str, int]:
        routed = [
            self.router.route_message(r.topic, r.key, r.value, r.headers or ()) for r in records
        ]
        delay = self.options.retry_initial
        while True:
            try:
                letters = await self._delivery.deliver(records, routed)
                self.outage.succeeded()
                if letters:
                    # Stored before they are published and the offsets committed: a crash
                    # anywhere leaves none unrecorded, and a redelivery updates its row.
                    await dead_letters.record(self.runtime.db, letters)
                    await deadletter.publish(
                        await self._dlq_producer(), self.router.names.deadletter, letters
                    )
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if isinstance(exc, KafkaError):
                    await self._drop_producer()
                elif is_database_unavailable(exc):
                    self.outage.failed(exc)
                self.metrics.batch_retries += 1
                log.warning(
                    "batch failed; retrying",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=delay,
                    records=len(records),
                )
                if self.outage.exceeded:
                    self._leave.set()
                if self._stop.is_set() or self._leave.is_set() or self._all_revoked(records):
                    raise _Abandoned() from exc
                await first_of([self._stop.wait(), self._leave.wait()], timeout=delay)
                delay = min(delay * 2, self.options.retry_max)
                continue
            counts: dict[str, int] = {}
            for letter in letters:
                counts[letter.reason] = counts.get(letter.reason, 0) + 1
            return counts

    def _all_revoked(self, records: Sequence[Record]) -> bool:
        return bool(self._revoked) and all(
            TopicPartition(r.topic, r.partition) in self._revoked for r in records
        )

    async def _commit_batch(
        self, batches: Mapping[TopicPartition, Sequence[Record]], records: Sequence[Record]
    ) -> None:
        await self._commit(batches)
        if self._on_committed is not None:
            self._on_committed(records)

    async def _settle_commit(self) -> None:
        """Wait for the offset commit in flight, if any."""
        task, self._commit_task = self._commit_task, None
        if task is not None:
            await task

    async def _commit(self, batches: Mapping[TopicPartition, Sequence[Record]]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        offsets = {
            tp: records[-1].offset + 1
            for tp, records in batches.items()
            if records and tp in assigned and tp not in self._revoked
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced under us: the new owner re-reads these messages and the
            # inbox makes them duplicates. Never fatal.
            self.metrics.commit_failures += 1
            log.warning("offset commit failed after a rebalance", error=str(exc))
        except KafkaError as exc:
            self.metrics.commit_failures += 1
            log.warning("offset commit failed", error=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ liveness

    async def _watchdog(self, stop: asyncio.Event) -> None:
        """Notice a consumer that stopped polling, or has lag but receives nothing."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.watchdog_interval)
            if stop.is_set():
                return
            if self.outage.exceeded and self._consumer is not None:
                self._leave.set()  # another service found the database away too long
            if not self.metrics.consumer_in_group:
                continue  # left the group on purpose (database away); nothing to watch
            now = time.monotonic()
            self.metrics.lag = await self._lag()
            reason = None
            if self._idle.is_set() and now - self.metrics.last_poll_at > self.options.stall_after:
                reason = "no poll"
            elif now - self._last_records_at > self.options.stall_after and self.metrics.lag:
                reason = "lag but no records"
            if reason is None:
                self.metrics.stalled = False
                continue
            if not self.metrics.stalled:
                self.metrics.stalls += 1
            self.metrics.stalled = True
            if reason == "lag but no records":
                self._restart.set()  # run() replaces the consumer
            log.error(
                "consumer is not making progress",
                reason=reason,
                seconds_since_poll=round(now - self.metrics.last_poll_at, 1),
                seconds_since_records=round(now - self._last_records_at, 1),
            )

    async def _lag(self) -> int:
        """Messages in the assigned partitions not yet consumed (the group's lag here).

        The end offsets come from the broker (a ListOffsets request), not from the
        consumer's fetch responses, which a stuck or paused consumer no longer gets.
        """
        consumer = self._consumer
        assignment = list(consumer.assignment()) if consumer is not None else []
        if consumer is None or not assignment:
            self.metrics.partition_lag = {}
            return 0
        try:
            async with asyncio.timeout(2.0):
                ends = await consumer.end_offsets(assignment)
                positions = [await consumer.position(tp) for tp in assignment]
        except (TimeoutError, KafkaError, IllegalStateError):
            return self.metrics.lag  # unknown now: keep the last figure
        self.metrics.partition_lag = {
            (tp.topic, tp.partition): max(0, ends[tp] - position)
            for tp, position in zip(assignment, positions, strict=True)
        }
        return sum(self.metrics.partition_lag.values())


__all__ = ["ConsumerOptions", "EventConsumer"]
