"""A ``conveyor worker`` process under full load for minutes: its resident memory over time.

Run: ``.venv/bin/python bench/worker_memory.py`` (the local stack must be up; one minute of
load plus about half a minute to set up and clean up) or ``--minutes 10`` for issue 16's
figure. One real worker process (``python -m engine.cli worker``, default services:
consumer, relay, scheduler, retention; ``CONVEYOR_LOG_LEVEL=WARNING``) on a fresh schema,
topic prefix and consumer group. Once its consumer holds its partitions, this process
produces order CloudEvents continuously: chunks of ``bench/kafka_worker.py``'s
``messages()`` (2,000 new orders per chunk, each through its 10 steps, placed ->
refunded, orders interleaved), so the instances, history and outbox grow all the time as
in a real workload. The producer is paced at ``--rate`` events/s (default 4,000, about
what one worker drains here) and waits while the worker is more than ``--max-lag`` events
behind (history rows from PostgreSQL, once a second), so the worker always has work and
the lag stays bounded: the worker drains as fast as it can, and what it cannot take
waits in Kafka, not in its memory.

Every second: the worker's ``VmRSS`` and ``VmHWM`` (peak) from ``/proc/PID/status``, and
the history rows so far. Reported: RSS right after start (idle, partitions assigned, no
load yet: the baseline), at one minute, at the end, the maximum, the peak, the slope over
the second half of the load by least squares (MB/min), and the transitions applied. A
second baseline in the same run: a plain aiokafka consumer process (its own group,
``getmany`` + commit, no decoding) reading the same topic meanwhile, for what the Kafka
client alone holds. Issue 16's targets go to ``bench/targets.py`` named with the duration:
RSS under full load < 200 MB, and flat (slope < 1 MB/min over the second half).

The schema, topics and processes (by PID) are removed at the end, also after a failure or
Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from http_api import drop_schema, free_port
from kafka_worker import messages
from targets import record
from worker_process import (
    Cleanup,
    add_worker_env_option,
    create_topics,
    delete_topics,
    dsn,
    failed,
    start_worker,
    stop_processes,
    wait_assigned,
    worker_env,
)

from engine.messaging.batches import KeyPartitioner, PartitionBatches
from engine.messaging.clients import create_producer
from engine.settings import Settings
from engine.store.migrations import upgrade

ROOT = Path(__file__).resolve().parent.parent
RSS_GOAL_MB = 200.0  # issue 16: worker RSS under full load
SLOPE_GOAL = 1.0  # MB/min over the second half: "flat"
FLAT_MINUTES = 5.0  # shorter runs are mostly warm-up: their slope is not recorded
ORDERS_PER_CHUNK = 2_000  # messages() chunk: new orders, 10 events each
TICK = 0.02  # seconds between the producer's rounds
IDLE_SECONDS = 3.0  # idle samples after the partitions are assigned

# A plain aiokafka consumer process (the Kafka client's own footprint): reads and commits
# the topic until SIGTERM. Only aiokafka imported, so its RSS is the client's floor.
PLAIN_CONSUMER = """
import asyncio, signal, sys
from aiokafka import AIOKafkaConsumer

async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(
        sys.argv[2], bootstrap_servers=sys.argv[1], group_id=sys.argv[3],
        enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            if batches:
                await consumer.commit({tp: r[-1].offset + 1 for tp, r in batches.items()})
    finally:
        await consumer.stop()

asyncio.run(main())
"""


@dataclass(frozen=True, slots=True)
class Sample:
    """One second of the run: seconds since the load began, memory in kB, progress."""

    at: float
    rss_kb: int
    hwm_kb: int
    plain_rss_kb: int
    applied: int  # history rows (one per transition or start)
    produced: int
    orders: int  # orders produced so far (each a new instance once applied)


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in kB, from /proc/PID/status; zeros once it is gone."""
    values = {"VmRSS:": 0, "VmHWM:": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, *rest = line.split()
            if name in values and rest:
                values[name] = int(rest[0])
    return values["VmRSS:"], values["VmHWM:"]


def slope_mb_per_min(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, kB) points, in MB per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60 / 1024


@dataclass
class Load:
    """The producer's state, shared with the sampler (one event loop)."""

    applied: int = 0  # history rows, as last sampled
    produced: int = 0
    orders: int = 0
    waited: float = 0.0  # seconds the producer waited for the worker (lag above the bound)


async def produce_load(
    settings: Settings, topic: str, run: str, args: argparse.Namespace, load: Load
) -> None:
    """New orders all the time at ``args.rate`` events/s, waiting while the worker is
    more than ``args.max_lag`` events behind; until cancelled."""
    producer = create_producer(settings, linger_ms=0)
    await producer.start()
    partitioner = KeyPartitioner()
    chunk = 0

    def next_chunk() -> asyncio.Task[list[tuple[bytes, bytes]]]:
        """The next 2,000 new orders' events, made in a thread while the last are sent."""
        nonlocal chunk
        chunk += 1
        made = asyncio.to_thread(
            messages, f"{run}-{chunk}", ORDERS_PER_CHUNK, ORDERS_PER_CHUNK * 10
        )
        return asyncio.ensure_future(made)

    pending: list[tuple[bytes, bytes]] = []
    coming = next_chunk()
    acks: list[asyncio.Future[object]] = []
    allowance = 0.0
    last = time.monotonic()
    try:
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            if load.produced - load.applied >= args.max_lag:
                load.waited += now - last
                last, allowance = now, 0.0
                continue
            allowance = min(allowance + (now - last) * args.rate, args.rate)  # 1 s at most
            last = now
            due = int(allowance)
            if not due:
                continue
            allowance -= due
            batches = PartitionBatches(producer, partitioner)
            while due:
                if not pending:
                    pending = (await coming)[::-1]
                    coming = next_chunk()
                    load.orders += ORDERS_PER_CHUNK
                key, value = pending.pop()
                await batches.add(topic, key, value)
                load.produced += 1
                due -= 1
            acks.extend(await batches.send())
            still = []
            for ack in acks:
                if ack.done():
                    ack.result()  # a failed produce: raise it
                else:
                    still.append(ack)
            acks = still
    finally:
        coming.cancel()
        await producer.stop()


async def sample_until(
    conn: asyncpg.Connection,
    pids: tuple[int, int],
    until: float,
    began: float,
    load: Load,
    procs: Sequence[asyncio.subprocess.Process],
    logs: Sequence[Path],
    verbose: bool,
) -> list[Sample]:
    """One sample a second until ``until`` (monotonic)."""
    samples: list[Sample] = []
    tick = time.monotonic()
    while tick < until:
        failed(procs, logs)
        rss, hwm = memory_kb(pids[0])
        plain, _ = memory_kb(pids[1])
        load.applied = int(await conn.fetchval("select coalesce(max(id), 0) from history"))
        samples.append(
            Sample(tick - began, rss, hwm, plain, load.applied, load.produced, load.orders)
        )
        if verbose and len(samples) % 10 == 0:
            s = samples[-1]
            print(
                f"  {s.at:6.0f} s  rss {s.rss_kb / 1024:6.1f} MB  hwm {s.hwm_kb / 1024:6.1f} MB"
                f"  applied {s.applied:>10,}  lag {s.produced - s.applied:>7,}",
                flush=True,
            )
        tick += 1.0
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    return samples


@dataclass(frozen=True, slots=True)
class Result:
    idle_kb: int
    plain_idle_kb: int
    samples: list[Sample]
    load_seconds: float
    orders: int
    waited: float
    dead_letters: int
    not_applied: int


async def run_once(base: Settings, args: argparse.Namespace, workdir: Path) -> Result:
    run = f"bench_wm_{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={"database_schema": run, "topic_prefix": run})
    cleanup = Cleanup()
    procs: list[asyncio.subprocess.Process] = []
    handles = []
    conn: asyncpg.Connection | None = None
    producing: asyncio.Task[None] | None = None
    try:
        cleanup.schemas.append(settings)
        await upgrade(settings)
        await create_topics(base, run, cleanup)
        topic = f"{run}.in.order"
        log = workdir / f"{run}.worker.log"
        handles.append(log.open("wb"))
        port = free_port()
        worker = await start_worker(worker_env(run, args.worker_env), [], port, handles[-1])
        procs.append(worker)
        plain_log = workdir / f"{run}.plain.log"
        handles.append(plain_log.open("wb"))
        plain = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PLAIN_CONSUMER,
            ",".join(base.kafka_servers()),
            topic,
            f"{run}-plain",
            stdout=handles[-1],
            stderr=handles[-1],
        )
        procs.append(plain)
        logs = [log, plain_log]
        await wait_assigned([port], procs[:1], logs[:1])
        conn = await asyncpg.connect(
            dsn(base), ssl=False, server_settings={"search_path": run, "application_name": run}
        )
        await asyncio.sleep(IDLE_SECONDS)  # idle: what start-up left, before any load
        idle_kb = memory_kb(worker.pid)[0]
        plain_idle_kb = memory_kb(plain.pid)[0]
        if args.verbose:
            print(
                f"  worker pid {worker.pid} idle {idle_kb / 1024:.1f} MB; plain aiokafka pid "
                f"{plain.pid} idle {plain_idle_kb / 1024:.1f} MB",
                flush=True,
            )
        load = Load()
        began = time.monotonic()
        producing = asyncio.create_task(produce_load(base, topic, run, args, load))
        samples = await sample_until(
            conn,
            (worker.pid, plain.pid),
            began + args.minutes * 60,
            began,
            load,
            procs,
            logs,
            args.verbose,
        )
        load_seconds = time.monotonic() - began
        producing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producing
        producing = None
        await stop_processes(procs)
        check = await conn.fetchrow(
            "select (select count(*) from dead_letters) as dead,"
            " (select count(*) from history where outcome not in ('started', 'applied'))"
            " as not_applied"
        )
        return Result(
            idle_kb,
            plain_idle_kb,
            samples,
            load_seconds,
            load.orders,
            load.waited,
            int(check["dead"]),
            int(check["not_applied"]),
        )
    finally:
        if producing is not None:
            producing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producing
        await stop_processes(procs)
        for handle in handles:
            handle.close()
        if conn is not None:
            await conn.close()
        for schema in cleanup.schemas:
            await drop_schema(schema)
        await delete_topics(base, cleanup.prefixes)


def nearest(samples: Sequence[Sample], at: float) -> Sample:
    return min(samples, key=lambda s: abs(s.at - at))


def report(result: Result, args: argparse.Namespace) -> None:
    samples = result.samples
    mb = 1024.0
    last = samples[-1]
    at_minute = nearest(samples, 60.0)
    minute = f"{at_minute.rss_kb / 1024:.1f} MB" if result.load_seconds >= 60 else "(shorter run)"
    peak = max(samples, key=lambda s: s.rss_kb)
    half = [(s.at, float(s.rss_kb)) for s in samples if s.at >= result.load_seconds / 2]
    slope = slope_mb_per_min(half)
    plain_slope = slope_mb_per_min(
        [(s.at, float(s.plain_rss_kb)) for s in samples if s.at >= result.load_seconds / 2]
    )
    applied = last.applied
    rate = applied / result.load_seconds
    print(
        f"\nOne `conveyor worker` process (consumer, relay, scheduler, retention) under "
        f"{result.load_seconds / 60:.1f} min of load: {applied:,} transitions applied "
        f"({rate:,.0f}/s), {result.orders:,} orders produced at up to {args.rate:,.0f} "
        f"events/s, lag bound {args.max_lag:,} (producer waited {result.waited:.0f} s); "
        f"{os.cpu_count()} cores shared with PostgreSQL and Kafka\n"
    )
    step = max(10, round(result.load_seconds / 10 / 10) * 10)
    head = (
        f"{'at':>7}{'RSS MB':>9}{'peak MB':>9}{'plain MB':>10}{'applied':>12}"
        f"{'orders':>11}{'lag':>8}"
    )
    print(head)
    print("-" * len(head))
    print(
        f"{'idle':>7}{result.idle_kb / mb:>9.1f}{'':>9}{result.plain_idle_kb / mb:>10.1f}"
        f"{0:>12,}{0:>11,}{0:>8,}"
    )
    shown = [s for s in samples if round(s.at) % step == 0 and s.at >= 1] + [last]
    seen: set[int] = set()
    for s in shown:
        if round(s.at) in seen:
            continue
        seen.add(round(s.at))
        print(
            f"{s.at:>6.0f}s{s.rss_kb / mb:>9.1f}{s.hwm_kb / mb:>9.1f}{s.plain_rss_kb / mb:>10.1f}"
            f"{s.applied:>12,}{s.orders:>11,}{s.produced - s.applied:>8,}"
        )
    print(
        f"\nworker RSS: idle {result.idle_kb / mb:.1f} MB, at 1 min {minute}, "
        f"at the end {last.rss_kb / mb:.1f} MB, max "
        f"{peak.rss_kb / mb:.1f} MB (at {peak.at:.0f} s), peak (VmHWM) {last.hwm_kb / mb:.1f} MB;"
        f"\nslope over the second half ({len(half)} samples, least squares): "
        f"{slope:+.2f} MB/min (plain aiokafka consumer: {plain_slope:+.2f} MB/min, "
        f"{last.plain_rss_kb / mb:.1f} MB at the end)"
        f"\norders: produced so far (2,000 new ones per 20,000 events); lag: events produced"
        f" and not yet applied; dead letters "
        f"{result.dead_letters}, history rows not applied {result.not_applied}"
    )
    minutes = f"{args.minutes:g} min"
    baseline = (
        f"idle worker {result.idle_kb / mb:.0f} MB; plain aiokafka consumer "
        f"{last.plain_rss_kb / mb:.0f} MB"
    )
    top = max(peak.rss_kb, last.hwm_kb) / mb
    record(
        f"worker RSS under full load ({minutes})",
        f"max {top:.0f} MB, end {last.rss_kb / mb:.0f} MB ({rate:,.0f} transitions/s)",
        f"< {RSS_GOAL_MB:.0f} MB",
        top < RSS_GOAL_MB,
        baseline,
    )
    if args.minutes < FLAT_MINUTES:
        # The second half of a short run is still warm-up: only a long run says anything
        # about growth (issue 16 asks for 10 minutes).
        print(f"(flatness is recorded for runs of {FLAT_MINUTES:g} minutes or more)")
        return
    record(
        f"worker RSS flat ({minutes})",
        f"{slope:+.2f} MB/min over the second half",
        f"slope ~0 over the second half (< {SLOPE_GOAL:g} MB/min)",
        slope < SLOPE_GOAL,
        baseline,
    )


async def main_async(args: argparse.Namespace) -> None:
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a producer's retries: not news
    workdir = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    try:
        result = await run_once(Settings(), args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(result, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="load duration")
    parser.add_argument("--rate", type=float, default=4_000.0, help="events/s at most")
    parser.add_argument(
        "--max-lag", type=int, default=20_000, help="events the worker may be behind"
    )
    add_worker_env_option(parser)
    parser.add_argument("--verbose", action="store_true", help="print every 10 s")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
