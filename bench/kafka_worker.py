"""One in-process worker driven by Kafka: transitions/s and produce-to-commit latency.

Run: ``.venv/bin/python bench/kafka_worker.py`` (the local stack must be up). It makes a
fresh schema and topics, and removes them afterwards. Measurements, for each place of
the outbox relay (``--relay``: in the worker's process, as plain ``conveyor worker``
runs it, and in a process of its own, as ``conveyor worker --services relay`` next to
``--services consumer,scheduler,retention`` does):

1. **burst**: N CloudEvents for M orders (10 per order: placed -> delivered -> returned
   -> refunded; orders interleaved at random), keyed by business key, produced as fast
   as possible while one worker (its consumer in this process) applies them.
   Throughput is N over the time from the first produce to the last offset commit.
2. **paced**: the same workload at a fixed rate (default 2,500 events/s), from another
   process, for latency: a record's Kafka timestamp (set when it is produced) to the
   moment its transition is committed in PostgreSQL (the batch's offsets follow in
   Kafka while the next batch is applied).
3. **plain aiokafka** (once): a bare consumer reading the burst's messages (getmany + commit per
   batch, no decoding): the ceiling the worker is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text

from engine.gc_tuning import tune_gc
from engine.messaging.batches import KeyPartitioner, PartitionBatches
from engine.messaging.clients import create_consumer, create_producer
from engine.messaging.consumer import ConsumerOptions, EventConsumer
from engine.messaging.metrics import WorkerMetrics
from engine.messaging.relay import OutboxRelay
from engine.messaging.routing import Router
from engine.observability import configure_logging
from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.migrations import upgrade
from engine.wire.cloudevents import CloudEvent, encode_structured

PARTITIONS = 6
PHASE_TIMEOUT = 300.0
RELAY_LABELS = {
    "in-process": "worker + relay",
    "process": "worker, relay apart",
    "none": "worker, no relay",
}
PACED_TICK = 0.005  # seconds between the paced producer's rounds

Step = tuple[str, Callable[[str], dict[str, Any]]]
STEPS: list[Step] = [
    (
        "order.placed",
        lambda k: {
            "order_id": k,
            "customer_id": "c-1",
            "currency": "EUR",
            "items": [{"sku": "sku-1", "quantity": 2, "unit_price": "5.00"}],
            "total": "10.00",
        },
    ),
    ("payment.initiated", lambda k: {"payment_id": f"p-{k}", "provider": "card"}),
    ("payment.captured", lambda k: {"payment_id": f"p-{k}", "amount": "10.00", "currency": "EUR"}),
    ("order.packed", lambda k: {}),
    ("order.shipped", lambda k: {"carrier": "dhl", "tracking_number": f"t-{k}"}),
    ("delivery.out_for_delivery", lambda k: {}),
    ("delivery.completed", lambda k: {}),
    ("return.requested", lambda k: {"reason": "too small"}),
    ("return.picked_up", lambda k: {}),
    ("payment.refunded", lambda k: {}),
]


@dataclass
class Tracker:
    """Latencies through the consumer's ``on_applied`` hook (the batch's transaction has
    committed: the transitions are durable), progress through ``on_committed`` (its
    offsets are committed in Kafka too)."""

    want: int
    latencies_ms: list[float] = field(default_factory=list)
    committed_records: int = 0
    last_commit: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def applied(self, records: Sequence[Any]) -> None:
        now_ms = time.time() * 1000
        self.latencies_ms.extend(now_ms - r.timestamp for r in records)

    def committed(self, records: Sequence[Any]) -> None:
        self.committed_records += len(records)
        self.last_commit = time.monotonic()
        if self.committed_records >= self.want:
            self.done.set()


def messages(run: str, instances: int, events: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: orders interleave at random (seeded), each order's events in
    order, so a batch holds a realistic mix of starts and later steps."""
    per_order = max(1, min(len(STEPS), events // instances))
    rng = random.Random(7)
    pending = [f"{run}-{i}" for i in range(instances) for _ in range(per_order)]
    rng.shuffle(pending)
    next_step: dict[str, int] = {}
    out: list[tuple[bytes, bytes]] = []
    for key in pending:  # the n-th occurrence of a key is its n-th step
        step = next_step.get(key, 0)
        next_step[key] = step + 1
        event_type, data = STEPS[step]
        value, _ = encode_structured(
            CloudEvent(
                id=f"{key}/{step}", source="bench", type=event_type, subject=key, data=data(key)
            )
        )
        out.append((key.encode(), value))
    return out


async def produce(
    settings: Settings, topic: str, batch: Sequence[tuple[bytes, bytes]], rate: float | None
) -> float:
    """Produce ``batch`` (at ``rate`` per second if given); return the start time.

    Messages go out as explicit record batches per partition (keyed as ``send(key=...)``
    would place them), every ``PACED_TICK`` seconds when paced (like a producer's linger):
    a light load generator, so that the machine's cores go to the worker, PostgreSQL and
    the broker. A record's timestamp is the moment it was added to its batch.
    """
    producer = create_producer(settings, linger_ms=0)
    await producer.start()
    partitioner = KeyPartitioner()
    started = time.monotonic()
    try:
        futures = []
        sent = 0
        while sent < len(batch):
            due = (
                len(batch)
                if not rate
                else min(len(batch), int((time.monotonic() - started) * rate) + 1)
            )
            batches = PartitionBatches(producer, partitioner)
            for key, value in batch[sent:due]:
                await batches.add(topic, key, value)
            futures.extend(await batches.send())
            sent = due
            if rate and sent < len(batch):
                await asyncio.sleep(max(started + (sent + 1) / rate - time.monotonic(), PACED_TICK))
        for future in futures:
            await future
    finally:
        await producer.stop()
    return started


def _produce_in_child(
    settings: Settings,
    topic: str,
    batch: Sequence[tuple[bytes, bytes]],
    rate: float,
    started: Any,
) -> None:
    """Child process: produce at ``rate`` with its own event loop and CPU time."""

    async def main() -> None:
        started.value = await produce(settings, topic, batch, rate)

    asyncio.run(main())


async def produce_elsewhere(
    settings: Settings, topic: str, batch: Sequence[tuple[bytes, bytes]], rate: float
) -> float:
    """Paced production from a separate process, so that pacing does not compete with the
    worker for this event loop (CLOCK_MONOTONIC is shared between processes)."""
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Value("d", 0.0)
    child = ctx.Process(target=_produce_in_child, args=(settings, topic, batch, rate, started))
    child.start()
    # The first message goes out about when the child starts; report the child's own start.
    await asyncio.to_thread(child.join)
    if child.exitcode != 0:
        raise RuntimeError(f"producer process failed with exit code {child.exitcode}")
    return float(started.value)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def worker_phase(
    settings: Settings,
    runtime: Runtime,
    router: Router,
    topic: str,
    batch: Sequence[tuple[bytes, bytes]],
    rate: float | None,
    relay: str,
    args: argparse.Namespace,
) -> dict[str, float]:
    metrics = WorkerMetrics()
    tracker = Tracker(len(batch))
    consumer = EventConsumer(
        settings,
        runtime,
        router,
        metrics,
        options=ConsumerOptions(lanes=args.lanes, max_batch=args.max_batch),
        on_applied=tracker.applied,
        on_committed=tracker.committed,
    )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(consumer.run(stop))]
    published_before = await outbox_rows(runtime, published=True)
    relay_stop: Any = None
    if relay == "in-process":
        tasks.append(
            asyncio.create_task(OutboxRelay(runtime.db, settings, metrics=metrics).run(stop))
        )
    elif relay == "process":
        ctx = multiprocessing.get_context("spawn")
        relay_stop = ctx.Event()
        relay_child = ctx.Process(target=_relay_in_child, args=(settings, relay_stop))
        relay_child.start()
    try:
        async with asyncio.timeout(30):
            while metrics.assigned_partitions == 0:  # noqa: ASYNC110 (polls a plain counter)
                await asyncio.sleep(0.05)
        if rate:
            started = await produce_elsewhere(settings, topic, batch, rate)
        else:
            started = await produce(settings, topic, batch, rate)
        done = asyncio.create_task(tracker.done.wait())
        await asyncio.wait([done, *tasks], timeout=PHASE_TIMEOUT, return_when="FIRST_COMPLETED")
        if not done.done():
            done.cancel()
            for task in tasks:
                if task.done():
                    task.result()  # a crashed consumer or relay: raise its error
            raise TimeoutError(f"not all events committed within {PHASE_TIMEOUT} s")
        if relay != "none":  # let the relay finish, so the next phase starts clean
            async with asyncio.timeout(PHASE_TIMEOUT):
                while await outbox_rows(runtime, published=False):  # noqa: ASYNC110 (polls a table)
                    await asyncio.sleep(0.1)
        drained = time.monotonic()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        if relay_stop is not None:
            relay_stop.set()
            await asyncio.to_thread(relay_child.join, 30)
    relayed = await outbox_rows(runtime, published=True) - published_before
    elapsed = tracker.last_commit - started
    lat = tracker.latencies_ms
    return {
        "events": len(batch),
        "seconds": elapsed,
        "per_second": len(batch) / elapsed,
        "p50": percentile(lat, 0.50),
        "p99": percentile(lat, 0.99),
        "max": max(lat),
        "batches": metrics.batches,
        "applied": metrics.applied + metrics.started,
        "dead": sum(metrics.dead_lettered.values()),
        "published": relayed,
        "relay_per_second": relayed / (drained - started),
    }


def _relay_in_child(settings: Settings, stop_flag: Any) -> None:
    """Child process: an outbox relay (``conveyor worker --services relay``) until told."""

    async def main() -> None:
        db = create_engine(settings, pool_size=2)
        stop = asyncio.Event()
        relay = asyncio.create_task(OutboxRelay(db, settings).run(stop))
        await asyncio.to_thread(stop_flag.wait)
        stop.set()
        await relay
        await db.dispose()

    configure_logging(settings)
    tune_gc()
    asyncio.run(main())


async def outbox_rows(runtime: Runtime, *, published: bool) -> int:
    """How many outbox rows are published (or not yet)."""
    condition = "is not null" if published else "is null"
    async with runtime.db.connect() as conn:
        result = await conn.execute(
            text(f"select count(*) from outbox where published_at {condition}")
        )
        return int(result.scalar_one())


async def plain_phase(settings: Settings, topic: str, want: int) -> dict[str, float]:
    consumer = create_consumer(
        settings.model_copy(update={"consumer_group": f"plain-{uuid.uuid4().hex[:8]}"}), topic
    )
    await consumer.start()
    seen = 0
    first = last = 0.0
    try:
        async with asyncio.timeout(PHASE_TIMEOUT):
            while seen < want:
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                if not batches:
                    continue
                if not first:
                    first = time.monotonic()
                seen += sum(len(r) for r in batches.values())
                await consumer.commit({tp: r[-1].offset + 1 for tp, r in batches.items()})
                last = time.monotonic()
    finally:
        await consumer.stop()
    return {"events": seen, "seconds": last - first, "per_second": seen / (last - first)}


async def main(args: argparse.Namespace) -> None:
    base = Settings()
    run = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "database_schema": f"bench_{run}",
            "topic_prefix": f"bench_{run}",
            "consumer_group": f"bench_{run}",
            "log_level": "WARNING",
        }
    )
    configure_logging(settings)
    await upgrade(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers())
    await admin.start()
    registry = load_workflows(["workflows"])
    router = Router(registry, settings.topic_prefix)
    topics = [
        *router.topics,
        router.names.deadletter,
        *(f"{settings.topic_prefix}.{t}" for t in ("events", "commands", "instances")),
    ]
    await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    db = create_engine(settings)
    runtime = Runtime(db, registry, topic_prefix=settings.topic_prefix)
    topic = router.names.workflow("order")
    tune_gc()  # as ``conveyor worker`` does once started
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        for relay in args.relay:
            label = RELAY_LABELS[relay]
            bursts, paceds = [], []
            for attempt in range(args.runs):
                burst = messages(f"burst-{relay}-{attempt}", args.instances, args.events)
                bursts.append(
                    await worker_phase(settings, runtime, router, topic, burst, None, relay, args)
                )
                if args.rate:
                    paced = messages(
                        f"paced-{relay}-{attempt}", max(1, args.instances // 2), args.events // 2
                    )
                    paceds.append(
                        await worker_phase(
                            settings, runtime, router, topic, paced, args.rate, relay, args
                        )
                    )
            rows.append((f"{label}, burst", median_by(bursts, "per_second")))
            if paceds:
                rows.append((f"{label}, paced {args.rate:,.0f}/s", median_by(paceds, "p99")))
        rows.append(
            ("plain aiokafka, same messages", await plain_phase(settings, topic, len(burst)))
        )
    finally:
        await db.dispose()
        await admin.delete_topics(topics)
        await admin.close()
        cleanup = create_engine(base, pool_size=1)
        async with cleanup.begin() as conn:
            await conn.execute(text(f'drop schema if exists "{settings.database_schema}" cascade'))
        await cleanup.dispose()
    report(rows)


def median_by(runs: Sequence[dict[str, float]], figure: str) -> dict[str, float]:
    """The run whose ``figure`` is the median (its other figures come with it)."""
    ordered = sorted(runs, key=lambda r: r[figure])
    return {**ordered[len(ordered) // 2], "runs": len(runs)}


def report(rows: Sequence[tuple[str, dict[str, float]]]) -> None:
    plain = rows[-1][1]["per_second"]
    runs = max((int(r.get("runs", 1)) for _, r in rows), default=1)
    print(
        f"\nOne worker, {os.cpu_count()} cores shared with PostgreSQL, Kafka and the producer; "
        f"each worker row is the median of {runs} runs (burst: by events/s; paced: by p99)\n"
    )
    head = ("run", "events", "seconds", "events/s", "vs plain", "p50 ms", "p99 ms", "max ms")
    print(f"{head[0]:<36}" + "".join(f"{h:>10}" for h in head[1:]))
    for label, r in rows:
        cells = [f"{r['events']:,.0f}", f"{r['seconds']:.2f}", f"{r['per_second']:,.0f}"]
        cells.append(f"{r['per_second'] / plain:.3f}x")
        cells += [f"{r[k]:,.1f}" if k in r else "" for k in ("p50", "p99", "max")]
        print(f"{label:<36}" + "".join(f"{c:>10}" for c in cells))
    for label, r in rows:
        if "applied" in r:
            print(
                f"{label}: {r['applied']:,.0f} transitions (starts included) in "
                f"{r['batches']:.0f} batches, {r['dead']:.0f} dead letters, "
                f"{r['published']:,.0f} outbox messages relayed "
                f"({r['relay_per_second']:,.0f}/s until the outbox was empty)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--instances", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=2_500.0, help="paced events/s; 0: skip")
    parser.add_argument("--lanes", type=int, default=ConsumerOptions().lanes)
    parser.add_argument("--max-batch", type=int, default=ConsumerOptions().max_batch)
    parser.add_argument("--runs", type=int, default=3, help="runs per row; the median run is shown")
    parser.add_argument(
        "--relay",
        nargs="+",
        choices=list(RELAY_LABELS),
        default=["in-process", "process"],
        help="where the outbox relay runs: in the worker's process, in a process of its own "
        "(conveyor worker --services relay), or not at all; one set of runs each",
    )
    import uvloop

    uvloop.run(main(parser.parse_args()))
