"""A ``conveyor worker`` process draining a backlog: transitions/s as a user sees them.

Run: ``.venv/bin/python bench/worker_process.py`` (the local stack must be up; one and a half
to three minutes with the defaults). Each run gets a fresh schema, topic prefix and consumer group,
the same 20,000 CloudEvents as ``bench/kafka_worker.py`` (2,000 orders, 10 steps each:
placed -> ... -> refunded, orders interleaved at random, keyed by business key) produced by
a real producer, and real worker processes (``python -m engine.cli worker``,
``CONVEYOR_LOG_LEVEL=WARNING``, each with its ``/health`` port, which says when its
consumer holds partitions). Configurations (``--configs``):

* ``one:before``: one worker (relay in its process, as ``conveyor worker`` runs by
  default), started and in its group BEFORE the backlog is produced (it consumes while
  production goes on); wall time from the first produce to the last history row;
* ``one:after``: the same worker started AFTER the whole backlog is in Kafka; wall time
  from the worker's start (process start, imports, group join included);
* ``apart:after``: ``--services consumer`` plus a second process
  ``--services relay,scheduler``;
* ``two:after``: two default worker processes in one consumer group.

Progress is read from PostgreSQL every 20 ms on one connection: ``max(id)`` of history
(an index-only look at the primary key's last page, constant cost; ids come from an
identity and the schema is fresh, so it is the row count up to gaps and rows of a
transaction not committed yet), and ``count(*)`` once ``max(id)`` says the end is near, to
see the last row land exactly (``--counter count`` polls ``count(*)`` throughout, to see
what counting costs). Transitions/s is the rows from the first sample that saw any to
the last row, over that time; "steady" is the same over the last three quarters of the
rows (start-up and warm-up left out). After the workers stop, every run is checked: the
history holds exactly one row per event (no duplicate event id), every order is
``refunded``, and there are no dead letters. Beside each figure: the CPU the worker
processes, PostgreSQL, the broker and the whole machine used meanwhile (from ``/proc``),
which says whether the worker waits or computes.

The baseline, in the same run: a plain aiokafka consumer group reading and committing the
same 20,000 messages (``getmany`` of 1,000 + commit per batch, no decoding), median of
``--runs``. Everything shares the machine's cores (PostgreSQL, Kafka, the producer, this
process), so read the figures as floors. Schemas, topics and processes are removed at the
end, also after a failure or Ctrl-C.

``--profile PATH`` attaches py-spy (``.venv/bin/pip install py-spy``; not a dependency) to
the first worker from its first applied row, for 20 s: e.g. ``--events 100000 --runs 1
--configs one:after --profile /tmp/worker.svg``. ``--worker-env NAME=VALUE`` tries a
setting (``CONVEYOR_LOG_LEVEL=INFO``, ``CONVEYOR_WORKER_SERVICES=consumer``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from http_api import drop_schema, free_port
from kafka_worker import PARTITIONS, messages, plain_phase, produce
from targets import record

from engine.registry import load_workflows
from engine.settings import Settings
from engine.store.migrations import upgrade

ROOT = Path(__file__).resolve().parent.parent
TARGET = 8_000.0  # issue 16: transitions/s, one worker process, relay in it
POLL = 0.02  # seconds between progress samples
RUN_TIMEOUT = 120.0  # a run that has not drained by then fails
FINAL_STATE = "refunded"
PROFILE_SECONDS = 20

# Each configuration: the processes it starts, as ``conveyor worker`` arguments.
DEPLOYMENTS: dict[str, tuple[str, list[list[str]]]] = {
    "one": ("1 worker, relay in it", [[]]),
    "apart": (
        "consumer | relay,scheduler",
        [["--services", "consumer"], ["--services", "relay,scheduler"]],
    ),
    "two": ("2 workers, one group", [[], []]),
}
DEFAULT_CONFIGS = ["one:before", "one:after", "apart:after", "two:after"]


@dataclass
class Run:
    """One drained backlog: what the samples and the checks found."""

    rows: int
    seconds: float  # first sample with rows -> last row
    steady_per_second: float
    wall: float  # first produce (before) or worker start (after) -> last row
    to_first_row: float  # the same start -> first sample with rows
    outbox_drained: float  # last row -> no unpublished outbox row left
    samples: int
    poll_ms: float  # mean time of one progress query
    cpu: list[float]  # per worker process: cores used from the first row to the last
    postgres_cpu: float  # all PostgreSQL processes meanwhile
    kafka_cpu: float  # the broker (java) meanwhile
    host_cpu: float  # the whole machine's busy cores meanwhile

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds


@dataclass
class Cleanup:
    """What this script made, removed at the end whatever happened."""

    schemas: list[Settings] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


def dsn(settings: Settings) -> str:
    return settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def topics_for(prefix: str) -> list[str]:
    from engine.messaging.routing import Router

    router = Router(load_workflows(["workflows"]), prefix)
    names = router.names
    return [*router.topics, names.deadletter, names.events, names.commands, names.instances]


async def create_topics(settings: Settings, prefix: str, cleanup: Cleanup) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers())
    await admin.start()
    try:
        cleanup.prefixes.append(prefix)
        topics = topics_for(prefix)
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
        # Produce only once every partition has a leader (no NotLeaderForPartition retries).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            described = await admin.describe_topics(topics)
            partitions = [p for t in described for p in t.get("partitions", ())]
            if len(partitions) == PARTITIONS * len(topics) and all(
                p.get("leader", -1) >= 0 for p in partitions
            ):
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topics(settings: Settings, prefixes: Sequence[str]) -> None:
    if not prefixes:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_servers())
    await admin.start()
    try:
        mine = tuple(f"{p}." for p in prefixes)
        topics = [t for t in await admin.list_topics() if t.startswith(mine)]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


async def stop_processes(procs: Sequence[asyncio.subprocess.Process]) -> None:
    """SIGTERM each (by PID), wait for a graceful stop, kill what is left."""
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 25)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def worker_env(run: str, extra: Sequence[str]) -> dict[str, str]:
    """A worker's environment: schema, topic prefix and group ``run``; ``extra`` NAME=VALUE."""
    env = dict(
        os.environ,
        CONVEYOR_DATABASE_SCHEMA=run,
        CONVEYOR_TOPIC_PREFIX=run,
        CONVEYOR_CONSUMER_GROUP=run,
        CONVEYOR_LOG_LEVEL="WARNING",
    )
    env.update(dict(item.split("=", 1) for item in extra))
    return env


def add_worker_env_option(parser: argparse.ArgumentParser) -> None:
    """``--worker-env NAME=VALUE ...``: extra environment for the worker processes (what
    :func:`worker_env` adds), to try a setting."""
    parser.add_argument(
        "--worker-env",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the workers (to try a setting)",
    )


async def start_worker(
    env: dict[str, str], extra: Sequence[str], port: int, log: IO[bytes]
) -> asyncio.subprocess.Process:
    """``python -m engine.cli worker *extra`` with its /health on ``port``, output to ``log``."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        "worker",
        *extra,
        env={**env, "CONVEYOR_WORKER_HEALTH_PORT": str(port)},
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )


async def assigned_partitions(ports: Sequence[int]) -> int:
    total = 0
    async with httpx.AsyncClient(timeout=1.0) as client:
        for port in ports:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                body = (await client.get(f"http://127.0.0.1:{port}/health")).json()
                total += int(body["consumer"]["assigned_partitions"])
    return total


async def wait_assigned(
    ports: Sequence[int], procs: Sequence[asyncio.subprocess.Process], logs: Sequence[Path]
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        failed(procs, logs)
        if await assigned_partitions(ports) >= PARTITIONS:
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the workers did not get their partitions within 60 s")


def failed(procs: Sequence[asyncio.subprocess.Process], logs: Sequence[Path]) -> None:
    for proc, log in zip(procs, logs, strict=True):
        if proc.returncode is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"a worker exited with {proc.returncode}:\n{tail}")


async def progress(
    conn: asyncpg.Connection,
    want: int,
    counter: str,
    procs: Sequence[asyncio.subprocess.Process],
    logs: Sequence[Path],
    on_first_row: Callable[[], None] = lambda: None,
) -> tuple[list[tuple[float, int]], float]:
    """Sample the applied rows every ``POLL`` s until all ``want`` are there.

    Returns the samples (monotonic time, rows) and the mean query time."""
    samples: list[tuple[float, int]] = []
    spent = 0.0
    deadline = time.monotonic() + RUN_TIMEOUT
    exact = counter == "count"
    while True:
        begun = time.monotonic()
        if exact:
            rows = int(await conn.fetchval("select count(*) from history"))
        else:
            rows = int(await conn.fetchval("select coalesce(max(id), 0) from history"))
            if not samples or rows >= want:  # the first sample and the end: exact
                exact = rows >= want
                rows = int(await conn.fetchval("select count(*) from history"))
        now = time.monotonic()
        spent += now - begun
        if rows or samples:
            if not samples:
                on_first_row()
            samples.append((now, rows))
        if rows >= want:
            return samples, spent / max(1, len(samples))
        if now > deadline:
            raise SystemExit(f"only {rows} of {want} history rows after {RUN_TIMEOUT:.0f} s")
        if len(samples) % 25 == 0:
            failed(procs, logs)
        await asyncio.sleep(max(0.0, begun + POLL - time.monotonic()))


def _process_cpu(stat: Path) -> tuple[str, float]:
    """(command name, user + system CPU seconds) of one /proc/<pid>/stat."""
    head, _, rest = stat.read_text().rpartition(")")
    fields = rest.split()
    return head.partition("(")[2], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: Sequence[int]) -> list[float]:
    """CPU seconds so far: each of ``pids``, then all PostgreSQL processes, the Kafka
    broker (java) and the whole machine (Linux /proc; zeros elsewhere)."""
    workers = []
    for pid in pids:
        try:
            workers.append(_process_cpu(Path(f"/proc/{pid}/stat"))[1])
        except (OSError, IndexError, ValueError):
            workers.append(0.0)
    by_command: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            command, seconds = _process_cpu(stat)
            by_command[command] = by_command.get(command, 0.0) + seconds
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
        host = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # not idle, iowait
    except (OSError, ValueError):
        host = 0.0
    return [*workers, by_command.get("postgres", 0.0), by_command.get("java", 0.0), host]


def steady(samples: Sequence[tuple[float, int]], want: int) -> float:
    """Rows/s over the last three quarters of the rows."""
    quarter = next((s for s in samples if s[1] >= want / 4), samples[0])
    last = samples[-1]
    return (last[1] - quarter[1]) / max(last[0] - quarter[0], 1e-9)


async def outbox_drained(conn: asyncpg.Connection) -> float:
    """Seconds until no outbox row is left unpublished (the relay caught up)."""
    begun = time.monotonic()
    deadline = begun + 60
    while await conn.fetchval("select exists (select from outbox where published_at is null)"):
        if time.monotonic() > deadline:
            raise SystemExit("the relay did not empty the outbox within 60 s")
        await asyncio.sleep(POLL)
    return time.monotonic() - begun


async def verify(conn: asyncpg.Connection, orders: int, want: int) -> None:
    """Exactly once: one history row per event, every order at its final state."""
    check = await conn.fetchrow(
        "select (select count(*) from history) as rows,"
        " (select count(distinct event_id) from history) as ids,"
        " (select count(*) from history where outcome not in ('started', 'applied'))"
        " as not_applied,"
        " (select count(*) from instances) as instances,"
        " (select count(*) from instances where state = $1) as final,"
        " (select count(*) from dead_letters) as dead",
        FINAL_STATE,
    )
    good = (
        check["rows"] == want
        and check["ids"] == want
        and check["not_applied"] == 0
        and check["instances"] == orders
        and check["final"] == orders
        and check["dead"] == 0
    )
    if not good:
        raise SystemExit(f"not exactly once: {dict(check)} (want {want} rows, {orders} orders)")


async def one_run(
    base: Settings,
    batch: Sequence[tuple[bytes, bytes]],
    orders: int,
    deployment: str,
    mode: str,
    args: argparse.Namespace,
    workdir: Path,
    cleanup: Cleanup,
) -> tuple[Run, list[int]]:
    run = f"bench_wp_{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={"database_schema": run, "topic_prefix": run})
    cleanup.schemas.append(settings)
    await upgrade(settings)
    await create_topics(base, run, cleanup)
    topic = f"{run}.in.order"
    env = worker_env(run, args.worker_env)
    conn = await asyncpg.connect(
        dsn(base), ssl=False, server_settings={"search_path": run, "application_name": run}
    )
    procs: list[asyncio.subprocess.Process] = []
    logs: list[Path] = []
    handles: list[IO[bytes]] = []
    try:
        if mode == "after":
            await produce(base, topic, batch, None)
        start = time.monotonic()
        ports: list[int] = []
        for i, extra in enumerate(DEPLOYMENTS[deployment][1]):
            port = free_port()
            if "relay,scheduler" not in extra:
                ports.append(port)
            logs.append(workdir / f"{run}.{i}.log")
            handles.append(logs[-1].open("wb"))
            procs.append(await start_worker(env, extra, port, handles[-1]))
            cleanup.processes.append(procs[-1])
        if mode == "before":
            await wait_assigned(ports, procs, logs)
            start = time.monotonic()
            producing = asyncio.create_task(produce(base, topic, batch, None))
            cleanup.tasks.append(producing)
        profiling: list[asyncio.Task[None]] = []

        cpu_at_first: list[float] = []

        def first_row() -> None:
            cpu_at_first.extend(cpu_snapshot([p.pid for p in procs]))
            # py-spy: the first consumer process of the first run, once
            if args.profile and not args.profiled:
                args.profiled = True
                profiling.append(asyncio.create_task(py_spy(procs[0].pid, args.profile)))

        samples, poll_s = await progress(conn, len(batch), args.counter, procs, logs, first_row)
        cpu_at_last = cpu_snapshot([p.pid for p in procs])
        if mode == "before":
            await producing
        for task in profiling:
            await task
        relay = any(
            "relay" in (extra[1] if extra else env.get("CONVEYOR_WORKER_SERVICES", "relay"))
            for extra in DEPLOYMENTS[deployment][1]
        )
        drained = await outbox_drained(conn) if relay else 0.0
        await stop_processes(procs)
        await verify(conn, orders, len(batch))
        first, last = samples[0], samples[-1]
        cores = [
            (b - a) / max(last[0] - first[0], 1e-9)
            for a, b in zip(cpu_at_first, cpu_at_last, strict=True)
        ]
        result = Run(
            rows=last[1] - first[1],
            seconds=last[0] - first[0],
            steady_per_second=steady(samples, len(batch)),
            wall=last[0] - start,
            to_first_row=first[0] - start,
            outbox_drained=drained,
            samples=len(samples),
            poll_ms=poll_s * 1000,
            cpu=cores[:-3],
            postgres_cpu=cores[-3],
            kafka_cpu=cores[-2],
            host_cpu=cores[-1],
        )
        return result, [p.pid for p in procs]
    finally:
        await stop_processes(procs)
        for handle in handles:
            handle.close()
        await conn.close()
        await drop_schema(settings)
        cleanup.schemas.remove(settings)
        await delete_topics(base, [run])
        cleanup.prefixes.remove(run)


async def baseline(
    base: Settings, batch: Sequence[tuple[bytes, bytes]], runs: int, cleanup: Cleanup
) -> list[float]:
    """Plain aiokafka: a fresh group reads and commits the same messages, ``runs`` times."""
    prefix = f"bench_wp_{uuid.uuid4().hex[:8]}"
    await create_topics(base, prefix, cleanup)
    try:
        topic = f"{prefix}.in.order"
        await produce(base, topic, batch, None)
        figures = []
        for _ in range(runs):
            plain = await plain_phase(base, topic, len(batch))
            figures.append(plain["per_second"])
        return figures
    finally:
        await delete_topics(base, [prefix])
        cleanup.prefixes.remove(prefix)


async def py_spy(pid: int, output: str) -> None:
    """Record the worker's stacks with py-spy while it drains: a flame graph for a ``.svg``
    path, else collapsed stacks (one line per stack and its sample count)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    proc = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "200",
        "--duration",
        str(PROFILE_SECONDS),
        "--format",
        "flamegraph" if output.endswith(".svg") else "raw",
        "--output",
        output,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await proc.wait()


def median_run(runs: Sequence[Run]) -> Run:
    return sorted(runs, key=lambda r: r.per_second)[len(runs) // 2]


def report(
    results: Sequence[tuple[str, list[Run]]], plain: Sequence[float], args: argparse.Namespace
) -> None:
    ceiling = statistics.median(plain)
    counter = "max(id), then count(*)" if args.counter == "max" else "count(*)"
    extra = f"; worker env {' '.join(args.worker_env)}" if args.worker_env else ""
    print(
        f"\n{args.events:,} events ({args.instances:,} orders), `conveyor worker` processes; "
        f"{os.cpu_count()} cores shared with PostgreSQL and Kafka; progress: {counter} every "
        f"{POLL * 1000:.0f} ms; each row the median of {args.runs} runs by transitions/s"
        f"{extra}\n"
    )
    head = (
        f"{'configuration':<44}{'trans/s':>9}{'range':>16}{'steady/s':>10}{'wall s':>8}"
        f"{'1st row':>8}{'outbox':>8}{'cpu':>10}{'pg':>6}{'kafka':>6}{'host':>6}"
        f"{'vs plain':>9}{'of 8,000':>9}"
    )
    print(head)
    print("-" * len(head))
    for label, runs in results:
        m = median_run(runs)
        rates = sorted(r.per_second for r in runs)
        spread = f"{rates[0]:,.0f}-{rates[-1]:,.0f}"
        print(
            f"{label:<44}{m.per_second:>9,.0f}{spread:>16}{m.steady_per_second:>10,.0f}"
            f"{m.wall:>8.2f}{m.to_first_row:>8.2f}{m.outbox_drained:>8.2f}"
            f"{'+'.join(f'{c:.2f}' for c in m.cpu):>10}{m.postgres_cpu:>6.2f}"
            f"{m.kafka_cpu:>6.2f}{m.host_cpu:>6.2f}"
            f"{m.per_second / ceiling:>8.3f}x{m.per_second / TARGET:>8.2f}x"
        )
    print(
        f"{'plain aiokafka, same messages':<44}{ceiling:>9,.0f}"
        f"{f'{min(plain) / 1000:,.0f}k-{max(plain) / 1000:,.0f}k':>16}"
    )
    record_targets(results, ceiling)
    polls = [r.poll_ms for _, runs in results for r in runs]
    print(
        "\ntrans/s: history rows from the first sample that saw one to the last row; steady: "
        "the last three quarters of the rows;\nwall: from the first produce (before) or the "
        "workers' start (after) to the last row; 1st row: the same start to the first row;\n"
        "outbox: from the last row until the relay had published every outbox row;\n"
        "cpu, pg, kafka, host: cores used from the first row to the last by each worker "
        "process, all PostgreSQL processes,\nthe broker and the whole machine (of "
        f"{os.cpu_count()}). Every run checked: exactly one history row per event, every "
        "order refunded,\nno dead letters. "
        f"Mean progress query: {statistics.mean(polls):.2f} ms."
    )


def record_targets(results: Sequence[tuple[str, list[Run]]], ceiling: float) -> None:
    """Issue 16's worker target (one process with its relay drains the backlog at 8,000
    transitions/s or more) and the configurations it asks to be reported beside it."""
    baseline = f"plain aiokafka {ceiling:,.0f} msg/s"
    for label, runs in results:
        m = median_run(runs)
        one = label.startswith(DEPLOYMENTS["one"][0])
        record(
            f"worker: {label}",
            f"{m.per_second:,.0f} transitions/s ({m.per_second / ceiling:.3f} of plain)",
            f">= {TARGET:,.0f} transitions/s" if one else "reported",
            m.per_second >= TARGET if one else True,
            baseline,
        )


async def main_async(args: argparse.Namespace) -> None:
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a producer's retries: not news
    base = Settings()
    orders = args.instances
    batch = messages("wp", orders, args.events)
    want = len(batch)
    if want != orders * 10:
        raise SystemExit("--events must be 10 x --instances (every order runs to refunded)")
    cleanup = Cleanup()
    results: list[tuple[str, list[Run]]] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench_worker_"))
    try:
        plain = await baseline(base, batch, args.runs, cleanup)
        for config in args.configs:
            deployment, mode = config.split(":")
            runs = []
            for _ in range(args.runs):
                run, pids = await one_run(
                    base, batch, orders, deployment, mode, args, workdir, cleanup
                )
                runs.append(run)
                if args.verbose:
                    print(
                        f"  {config} pids {pids}: {run.per_second:,.0f}/s steady "
                        f"{run.steady_per_second:,.0f}/s wall {run.wall:.2f} s",
                        flush=True,
                    )
            when = "started before" if mode == "before" else "backlog first"
            label = f"{DEPLOYMENTS[deployment][0]}, {when}"
            results.append((label, runs))
    finally:
        for task in cleanup.tasks:
            task.cancel()
        await stop_processes(cleanup.processes)
        for settings in list(cleanup.schemas):
            await drop_schema(settings)
        await delete_topics(base, cleanup.prefixes)
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, plain, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--instances", type=int, default=None, help="default: events / 10")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (median)")
    parser.add_argument(
        "--configs",
        nargs="+",
        metavar="DEPLOYMENT:MODE",
        default=DEFAULT_CONFIGS,
        choices=[f"{d}:{m}" for d in DEPLOYMENTS for m in ("before", "after")],
        help=f"deployments {', '.join(DEPLOYMENTS)}; modes before, after "
        f"(default: {' '.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument(
        "--counter",
        choices=["max", "count"],
        default="max",
        help="progress query: max(id) (then count(*) near the end), or count(*) throughout",
    )
    add_worker_env_option(parser)
    parser.add_argument("--verbose", action="store_true", help="print each run")
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help=f"record the first run's worker with py-spy for {PROFILE_SECONDS} s from its first "
        "applied row (a flame graph for .svg, else collapsed stacks; give it a backlog that "
        "lasts as long, e.g. --events 100000 --runs 1 --configs one:after)",
    )
    args = parser.parse_args()
    args.profiled = False
    if args.instances is None:
        args.instances = max(1, args.events // 10)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
