"""Events applied per second through the durable runtime, next to a raw SQL baseline.

    .venv/bin/python bench/runtime.py [--seconds 3] [--runs 3] [--instances 2000]

Needs the local stack (make stack-up). Works in a fresh schema that it drops at the end.
Each case runs ``--runs`` times for ``--seconds``; the table shows medians.

* raw SQL baseline: per transaction, one instance row updated and one history row
  inserted, by N concurrent callers on asyncpg (the floor any runtime pays);
* runtime.send: one event per transaction through the whole runtime (lock, inbox check,
  decide, one set-based write of state + history + inbox + outbox, commit);
* runtime.send_many: batches of events for many instances in one transaction (the path
  the Kafka worker uses).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from engine.dsl import EmptyPayload, State, Workflow
from engine.model import Event
from engine.observability import configure_logging
from engine.registry import Registry
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.database import create_engine, driver_transaction
from engine.store.migrations import upgrade


class Toggle(Workflow[EmptyPayload]):
    """Flips between two states: the smallest real transition (state, history, outbox)."""

    name = "bench.toggle"
    version = 1
    data_schema = EmptyPayload

    a = State(initial=True)
    b = State()

    flip = a.on("flip").to(b)
    flop = b.on("flip").to(a)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def drive(
    callers: int, seconds: float, op: Callable[[int, int], Awaitable[int]]
) -> tuple[float, list[float]]:
    """Run ``op(caller, i)`` in ``callers`` loops for ``seconds``; return (events/s, latencies)."""
    latencies: list[float] = []
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop(caller: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            applied = await op(caller, i)  # read `done` only after the await
            done += applied
            latencies.append(time.perf_counter() - started)
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in range(callers)))
    elapsed = time.perf_counter() - started
    if "--debug" in sys.argv:
        print(f"  callers={callers} done={done} elapsed={elapsed:.2f} max={max(latencies):.3f}")
    return done / elapsed, latencies


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--debug", action="store_true", help="print each run")
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    settings = Settings(database_schema=schema, database_pool_size=32, log_level="WARNING")
    configure_logging(settings)  # structlog's default prints every start at DEBUG
    await upgrade(settings)
    db = create_engine(settings)
    registry = Registry()
    registry.register(Toggle)
    runtime = Runtime(db, registry)
    try:
        ids = []
        for i in range(args.instances):
            ids.append((await runtime.start("bench.toggle", f"B-{i}", {})).instance.id)
        rows: list[tuple[str, int, float, float, float, float]] = []

        def instance_for(caller: int, i: int, callers: int) -> uuid.UUID:
            return ids[(caller + i * callers) % len(ids)]

        async def case(
            name: str,
            callers: int,
            op_factory: Callable[[int], Callable[[int, int], Awaitable[int]]],
        ) -> None:
            rates, p50s, p99s = [], [], []
            for _ in range(args.runs):
                rate, lat = await drive(callers, args.seconds, op_factory(callers))
                rates.append(rate)
                p50s.append(pct(lat, 0.5))
                p99s.append(pct(lat, 0.99))
            rows.append(
                (
                    name,
                    callers,
                    statistics.median(rates),
                    statistics.median(p50s),
                    statistics.median(p99s),
                    rss_mb(),
                )
            )

        def raw_op(callers: int) -> Callable[[int, int], Awaitable[int]]:
            async def op(caller: int, i: int) -> int:
                instance_id = instance_for(caller, i, callers)
                async with driver_transaction(db) as conn:
                    await conn.execute(
                        "update instances set revision = revision + 1, updated_at = now()"
                        " where id = $1",
                        instance_id,
                    )
                    await conn.execute(
                        "insert into history (instance_id, revision, event_id, event_type,"
                        " source, payload, outcome) values ($1, 0, $2, 'raw', 'bench',"
                        " '{}'::jsonb, 'applied')",
                        instance_id,
                        str(uuid.uuid4()),
                    )
                return 1

            return op

        def send_op(callers: int) -> Callable[[int, int], Awaitable[int]]:
            async def op(caller: int, i: int) -> int:
                outcome = await runtime.send(
                    Event(
                        type="flip",
                        event_id=str(uuid.uuid4()),
                        instance_id=instance_for(caller, i, callers),
                    )
                )
                assert outcome.status == "applied", outcome
                return 1

            return op

        def batch_op(callers: int) -> Callable[[int, int], Awaitable[int]]:
            per_caller = len(ids) // callers

            async def op(caller: int, i: int) -> int:
                # Each caller owns a slice of instances, as Kafka partitions would.
                own = ids[caller * per_caller : (caller + 1) * per_caller]
                start = (i * args.batch) % len(own)
                chosen = [own[(start + k) % len(own)] for k in range(min(args.batch, len(own)))]
                outcomes = await runtime.send_many(
                    [Event(type="flip", event_id=str(uuid.uuid4()), instance_id=x) for x in chosen]
                )
                return sum(o.status == "applied" for o in outcomes)

            return op

        for callers in (1, 8, 32):
            await case("raw SQL baseline", callers, raw_op)
            await case("runtime.send", callers, send_op)
        for callers in (1, 4):
            await case(f"runtime.send_many ({args.batch}/txn)", callers, batch_op)

        baseline = {c: r for n, c, r, *_ in rows if n == "raw SQL baseline"}
        print(
            f"\nruntime benchmark: {args.runs} runs x {args.seconds:.0f} s, medians; "
            f"{args.instances} instances\n"
        )
        print(
            f"{'case':<32}{'callers':>8}{'events/s':>11}{'vs raw':>8}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'max RSS MB':>12}"
        )
        for name, callers, rate, p50, p99, rss in rows:
            ref = baseline.get(callers) or baseline[max(baseline)]
            print(
                f"{name:<32}{callers:>8}{rate:>11,.0f}{rate / ref:>8.2f}{p50:>9.2f}"
                f"{p99:>9.2f}{rss:>12.0f}"
            )
        print(
            "\n(p50/p99 are per call: one event for send, one batch for send_many;"
            " send_many's 'vs raw' compares with the baseline at the same caller count"
            " or its best)"
        )
    finally:
        await db.dispose()
        admin = create_engine(Settings(), pool_size=1)
        async with admin.begin() as conn:
            await conn.execute(text(f'drop schema if exists "{schema}" cascade'))
        await admin.dispose()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
