"""Operator queries at scale: p50 and p99 of /v1/stats and the instance lists and look-ups
an operator runs, and of the console's pages (signed in with a session, as a browser is),
over a small and a large table of `order` instances, and how p99 grows.

Each size gets a fresh schema of the local PostgreSQL, filled with set-based SQL
(``generate_series``): `order` v1 instances across its states, with the status each state
implies, order data (order id, one of 50,000 customers, currency, items, total, payment
and shipment once the order got there), ``state_entered_at`` over the last three days (so
some `paid`, `packed` and `out_for_delivery` orders are past their SLA) and three history
rows per instance; the indexes are built after the load, then ``vacuum analyze``. One
real ``conveyor api`` process per size serves the requests over loopback; an httpx
client sends them, a few at a time. The server, PostgreSQL and the client share the
machine's cores (and whatever else runs on it): read the figures as a ceiling.

    .venv/bin/python bench/operator_queries.py              # 10,000 and 1,000,000
    .venv/bin/python bench/operator_queries.py --quick      # 10,000 and 100,000
    .venv/bin/python bench/operator_queries.py --large 5000000 --requests 400 --seconds 60

Each query runs up to --requests times per size (--concurrency in flight) or for at most
--seconds, whichever ends first. The schemas are dropped at the end, also after a failure,
Ctrl-C or SIGTERM.

Issue 16's scale target goes to ``bench/targets.py`` for GET by key, list by state, stats
(``?workflow=order``) and the SLA query (``sla_breached=true``): p99 at the large size
within 2x of p99 at the small one, named after the sizes ("1M instances: GET by key p99
vs 10k"; with --quick "100k instances: ... vs 10k", so a quick run never stands in for
the million).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from http_api import drop_schema, free_port, prepare, process
from targets import record

from engine.settings import Settings

CUSTOMERS = 50_000


@dataclass(frozen=True, slots=True)
class StateShape:
    """How many orders sit in a state (``weight``, percent), with which status; they
    entered it within the last ``age_hours`` and were placed up to ``lead_hours`` before;
    ``stage`` 1: paid (data has a payment), 2: shipped too (and a shipment)."""

    state: str
    status: str
    weight: float
    age_hours: float
    lead_hours: float
    stage: int


# `order` v1 (workflows/order.py). SLAs: payment_review 4 h, paid 24 h, packed 24 h,
# out_for_delivery 48 h, return_picked_up 3 d; the ages put about a third of paid and
# packed orders and a third of those out for delivery past theirs.
STATES = (
    StateShape("placed", "active", 2.0, 1, 0, 0),
    StateShape("payment_pending", "active", 1.0, 0.5, 0.2, 0),
    StateShape("payment_review", "active", 0.2, 8, 1, 1),
    StateShape("paid", "active", 4.0, 36, 1, 1),
    StateShape("packing_escalated", "active", 0.3, 12, 30, 1),
    StateShape("packed", "active", 3.5, 36, 24, 1),
    StateShape("shipped", "active", 5.0, 48, 48, 2),
    StateShape("out_for_delivery", "active", 4.0, 72, 72, 2),
    StateShape("delivered", "active", 12.0, 72, 96, 2),
    StateShape("return_requested", "active", 0.5, 48, 120, 2),
    StateShape("return_picked_up", "active", 0.3, 72, 150, 2),
    StateShape("rto", "active", 0.2, 72, 120, 2),
    StateShape("completed", "completed", 57.0, 72, 240, 2),
    StateShape("refunded", "completed", 1.0, 72, 240, 2),
    StateShape("returned_to_warehouse", "completed", 0.2, 72, 200, 2),
    StateShape("cancelled", "cancelled", 8.8, 72, 6, 0),
)

# Sorted by created_at before the JSON is built, so that the heap (and the version-7 ids,
# as the engine makes them) follow creation time as they would in production.
INSERT_INSTANCES = """
insert into instances (id, workflow, version, business_key, state, data, status, revision,
                       created_at, updated_at, state_entered_at)
select
  (lpad(to_hex((extract(epoch from o.created_at) * 1000)::bigint), 12, '0') || '7'
     || substr(md5(o.key), 1, 3) || '8' || substr(md5(o.key), 4, 15))::uuid,
  'order', 1, o.key, o.state,
  jsonb_build_object(
    'order_id', o.key,
    'customer_id', 'C-' || (1 + floor(random() * $3))::int,
    'currency', (array['EUR', 'EUR', 'EUR', 'USD', 'GBP', 'SEK'])[1 + o.g % 6],
    'items', i.items,
    'total', i.total::text,
    'payment', case when o.stage >= 1 then jsonb_build_object(
      'payment_id', 'PAY-' || o.g, 'provider', 'card', 'captured_amount', i.total::text)
      end,
    'shipment', case when o.stage >= 2 then jsonb_build_object(
      'carrier', 'DHL', 'tracking_number', 'TRK' || lpad(o.g::text, 10, '0')) end,
    'delivery_attempts', case when o.stage >= 2 then 1 else 0 end,
    'delivered_at', null, 'cancellation_reason',
    case when o.state = 'cancelled' then 'customer request' end,
    'return_reason', null, 'refund_requested', false, 'escalated',
    o.state = 'packing_escalated'),
  o.status, 3, o.created_at, o.state_entered_at, o.state_entered_at
from (
  select e.*, e.state_entered_at - random() * e.lead_hours * interval '1 hour' as created_at
  from (
    select p.g, p.key, s.state, s.status, s.stage, s.lead_hours,
           $2::timestamptz - random() * s.age_hours * interval '1 hour' as state_entered_at
    from (
      select g, 'ORD-' || lpad(g::text, 9, '0') as key,
             width_bucket(random(), $4::float8[]) + 1 as k
      from generate_series(1, $1) as g offset 0
    ) as p
    join unnest($5::float8[], $6::float8[], $7::text[], $8::text[], $9::int[])
         with ordinality as s(age_hours, lead_hours, state, status, stage, k) using (k)
    offset 0
  ) as e
  order by created_at
) as o
cross join lateral (
  select jsonb_agg(jsonb_build_object('sku', 'SKU-' || (1 + floor(random() * 5000))::int,
                                      'quantity', q, 'unit_price', price::text)) as items,
         sum(q * price) as total
  from (select 1 + floor(random() * 3)::int as q,
               round((2 + random() * 98)::numeric, 2) as price
        from generate_series(0, o.g % 3)) as item
) as i
"""

# Three rows per instance: the start, then two events an hour apart (their states do not
# matter to the queries measured; the history's size does).
INSERT_HISTORY = """
insert into history (instance_id, revision, event_id, event_type, source, from_state,
                     to_state, transition, payload, outcome, occurred_at)
select i.id, e.revision, i.business_key || '-' || e.revision, e.event_type, 'bench',
       e.from_state, e.to_state, e.transition,
       case when e.revision = 1 then '{}'::jsonb
            else jsonb_build_object('payment_id', 'PAY-' || i.business_key,
                                    'provider', 'card') end,
       e.outcome, i.created_at + (e.revision - 1) * interval '1 hour'
from instances i
cross join (values
  (1, 'order.placed', null, 'placed', 'started', 'started'),
  (2, 'payment.initiated', 'placed', 'payment_pending', 'start_payment', 'applied'),
  (3, 'payment.captured', 'payment_pending', 'paid', 'capture', 'applied')
) as e(revision, event_type, from_state, to_state, transition, outcome)
order by i.created_at, e.revision
"""

# Secondary indexes, unique constraints and foreign keys of the loaded tables: dropped
# before the load and made again after it from their own definitions (``pg_get_*def``),
# which is much faster than maintaining them row by row. Primary keys stay.
INDEXES = """
select x.indexrelid::regclass::text as name, pg_get_indexdef(x.indexrelid) as definition
from pg_index x
where x.indrelid = any(array['instances'::regclass, 'history'::regclass])
  and not exists (select from pg_constraint c where c.conindid = x.indexrelid)
"""
CONSTRAINTS = """
select conrelid::regclass::text as table_name, conname as name,
       pg_get_constraintdef(oid) as definition
from pg_constraint
where conrelid = any(array['instances'::regclass, 'history'::regclass])
  and contype in ('u', 'f')
order by contype desc
"""


@dataclass(slots=True)
class Size:
    """One table size: its schema, how long the load took, what it weighs, and results."""

    label: str
    instances: int
    schema: str
    key: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def dsn(settings: Settings) -> str:
    return settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def connect(settings: Settings, schema: str, run: str) -> asyncpg.Connection:
    """A connection named after the run, so that cleanup can end what it still runs."""
    return await asyncpg.connect(
        dsn(settings),
        ssl=False,
        server_settings={"search_path": schema, "application_name": f"bench_ops_{run}"},
    )


async def load(settings: Settings, size: Size, run: str, now: datetime) -> None:
    """Fill ``size.schema`` (already migrated) with instances and history."""
    conn = await connect(settings, size.schema, run)
    try:
        await conn.execute("set work_mem = '256MB'")  # sorting the rows by creation
        indexes = await conn.fetch(INDEXES)
        constraints = await conn.fetch(CONSTRAINTS)  # unique ones first, then foreign keys
        for c in reversed(constraints):
            await conn.execute(f'alter table {c["table_name"]} drop constraint "{c["name"]}"')
        for index in indexes:
            await conn.execute(f"drop index {index['name']}")
        total = sum(s.weight for s in STATES)
        cumulative, running = [], 0.0
        for shape in STATES[:-1]:
            running += shape.weight / total
            cumulative.append(running)
        started = time.perf_counter()
        await conn.execute(
            INSERT_INSTANCES,
            size.instances,
            now,
            CUSTOMERS,
            cumulative,
            [s.age_hours for s in STATES],
            [s.lead_hours for s in STATES],
            [s.state for s in STATES],
            [s.status for s in STATES],
            [s.stage for s in STATES],
        )
        size.timings["instances"] = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute(INSERT_HISTORY)
        size.timings["history"] = time.perf_counter() - started
        started = time.perf_counter()
        # The GIN index takes as long as all the others: it gets a connection of its own.
        gin = [i["definition"] for i in indexes if " USING gin " in i["definition"]]
        others = [i["definition"] for i in indexes if " USING gin " not in i["definition"]]
        others += [
            f'alter table {c["table_name"]} add constraint "{c["name"]}" {c["definition"]}'
            for c in constraints
        ]
        await asyncio.gather(
            build(settings, size.schema, run, gin), build(settings, size.schema, run, others)
        )
        size.timings["indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("vacuum (analyze) instances")
        await conn.execute("vacuum (analyze) history")
        size.timings["vacuum analyze"] = time.perf_counter() - started
        for table in ("instances", "history"):
            size.sizes[table] = await conn.fetchval("select pg_table_size($1::regclass)", table)
            size.sizes[f"{table} indexes"] = await conn.fetchval(
                "select pg_indexes_size($1::regclass)", table
            )
        size.counts["sla breached"] = await conn.fetchval(
            "select count(*) from instances where status = 'active' and ("
            " (state in ('paid', 'packed') and state_entered_at < $1)"
            " or (state = 'out_for_delivery' and state_entered_at < $2)"
            " or (state = 'payment_review' and state_entered_at < $3))",
            now - timedelta(hours=24),
            now - timedelta(hours=48),
            now - timedelta(hours=4),
        )
    finally:
        await conn.close()


async def build(settings: Settings, schema: str, run: str, statements: list[str]) -> None:
    """Run ``statements`` in order on a connection of their own."""
    conn = await connect(settings, schema, run)
    try:
        await conn.execute("set maintenance_work_mem = '512MB'")
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


# ---------------------------------------------------------------- the requests


Target = Callable[[random.Random, int], str]


def business_key(rng: random.Random, n: int) -> str:
    return f"ORD-{rng.randint(1, n):09d}"


QUERIES: dict[str, Target] = {
    "stats ?workflow=order": lambda rng, n: "/v1/stats?workflow=order",
    "stats (all workflows)": lambda rng, n: "/v1/stats",
    "get by business key": lambda rng, n: f"/v1/workflows/order/instances/{business_key(rng, n)}",
    "list state=paid": lambda rng, n: "/v1/instances?workflow=order&state=paid&limit=50",
    "list sla_breached=true": (
        lambda rng, n: "/v1/instances?workflow=order&sla_breached=true&limit=50"
    ),
    "list in_state_longer_than=PT36H": (
        lambda rng, n: "/v1/instances?workflow=order&in_state_longer_than=PT36H&limit=50"
    ),
    "list data.customer_id=C-n": lambda rng, n: (
        f"/v1/instances?workflow=order&data.customer_id=C-{rng.randint(1, CUSTOMERS)}&limit=50"
    ),
}
CONSOLE: dict[str, Target] = {
    "console: overview": lambda rng, n: "/ui/overview",
    "console: list state=paid": lambda rng, n: "/ui/instances?workflow=order&state=paid",
    "console: list past SLA": lambda rng, n: "/ui/instances?workflow=order&sla_breached=true",
    "console: search by key": lambda rng, n: (
        f"/ui/instances?business_key_prefix={business_key(rng, n)}"
    ),
}
INSTANCE_PAGE = "console: one instance's page"
# Issue 16's scale target, per query: p99 at the large size within 2x of p99 at the small.
TARGETED = {
    "get by business key": "GET by key",
    "list state=paid": "list by state",
    "stats ?workflow=order": "stats",
    "list sla_breached=true": "SLA query",
}
MAX_RATIO = 2.0
PAGED = "3 pages of a state (3 requests)"
PAGED_STATES = ("delivered", "shipped", "paid", "completed")


@dataclass(slots=True)
class Server:
    """One `conveyor api` process on one size's schema, and a client for it."""

    size: Size
    base: str
    client: httpx.AsyncClient
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    instance_ids: list[str] = field(default_factory=list)

    async def get(self, path: str) -> dict[str, Any]:
        response = await self.client.get(self.base + path)
        if response.status_code != 200:
            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:300]}")
        body: dict[str, Any] = response.json()
        return body

    async def query(self, target: Target) -> None:
        await self.get(target(self.rng, self.size.instances))

    async def page(self, path: str) -> None:
        """A console page: 200 and HTML (it rendered; no error page)."""
        response = await self.client.get(self.base + path)
        if response.status_code != 200 or "<h1" not in response.text:
            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:300]}")

    async def console_page(self, target: Target) -> None:
        await self.page(target(self.rng, self.size.instances))

    async def instance_page(self) -> None:
        await self.page(f"/ui/instances/{self.rng.choice(self.instance_ids)}")

    async def sign_in(self) -> None:
        """Open a console session (its cookie stays in the client) and pick instances
        to open: one page of each state's list."""
        response = await self.client.post(
            f"{self.base}/ui/login",
            data={"api_key": self.size.key},
            headers={"Origin": self.base},
        )
        if response.status_code != 303:
            raise SystemExit(f"console sign-in: {response.status_code} {response.text[:300]}")
        for state in PAGED_STATES:
            page = await self.get(f"/v1/instances?workflow=order&state={state}&limit=50")
            self.instance_ids.extend(item["id"] for item in page["items"])

    async def three_pages(self) -> None:
        state = self.rng.choice(PAGED_STATES)
        path = f"/v1/instances?workflow=order&state={state}&limit=50"
        cursor = None
        for _ in range(3):
            page = await self.get(path if cursor is None else f"{path}&cursor={cursor}")
            cursor = page["next_cursor"]
            if cursor is None:
                break


async def timed(request: Callable[[], Awaitable[None]], args: argparse.Namespace) -> list[float]:
    """Latencies in seconds, sorted, of ``args.requests`` requests (after a warm-up of
    ``args.warmup``), ``args.concurrency`` in flight; fewer if ``args.seconds`` run out."""
    for _ in range(args.warmup):
        await request()
    latencies: list[float] = []
    remaining = iter(range(args.requests))
    deadline = time.monotonic() + args.seconds

    async def worker() -> None:
        for _ in remaining:
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            await request()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return sorted(latencies)


async def measure(servers: list[Server], args: argparse.Namespace) -> None:
    """Each query at each size in turn (sizes alternate, so that both see the same
    machine, whatever else runs on it)."""
    for name, target in QUERIES.items():
        for server in servers:
            server.size.latencies[name] = await timed(functools.partial(server.query, target), args)
    for server in servers:
        server.size.latencies[PAGED] = await timed(server.three_pages, args)
    for server in servers:
        await server.sign_in()
    for name, target in CONSOLE.items():
        for server in servers:
            page = functools.partial(server.console_page, target)
            server.size.latencies[name] = await timed(page, args)
    for server in servers:
        server.size.latencies[INSTANCE_PAGE] = await timed(server.instance_page, args)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank, in milliseconds."""
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank] * 1000


def report(sizes: list[Size], args: argparse.Namespace) -> None:
    small, large = sizes
    print(
        f"\nOperator queries, one `conveyor api` process per size, up to {args.requests} "
        f"requests per query and size or {args.seconds:g} s ({args.concurrency} in flight, "
        f"after {args.warmup} warm-up), httpx client, same {os.cpu_count()}-core machine as "
        "PostgreSQL\n"
    )
    for size in sizes:
        spent = ", ".join(f"{k} {v:.1f} s" for k, v in size.timings.items())
        weights = ", ".join(f"{k} {v / 2**20:.0f} MB" for k, v in size.sizes.items())
        print(
            f"{size.label}: {size.instances:,} instances, {3 * size.instances:,} history rows, "
            f"{size.counts['sla breached']:,} past their SLA"
        )
        print(f"  load {sum(size.timings.values()):.1f} s ({spent})")
        print(f"  {weights}")
    a, b = f"{small.instances:,}", f"{large.instances:,}"
    header = (
        f"{'query':<34} {a + ' p50 / p99 ms':>22} {b + ' p50 / p99 ms':>26} {'n':>4} {'p99 x':>6}"
    )
    print("\n" + header)
    print("-" * len(header))
    for name in small.latencies:
        s, lg = small.latencies[name], large.latencies[name]
        ratio = percentile(lg, 99) / percentile(s, 99)
        flag = "  > 2x" if ratio > 2 else ""
        print(
            f"{name:<34} {percentile(s, 50):>9.1f} / {percentile(s, 99):>8.1f} "
            f"{percentile(lg, 50):>13.1f} / {percentile(lg, 99):>8.1f} {len(lg):>4} "
            f"{ratio:>6.1f}{flag}"
        )
    print(
        "\nn: requests measured at the large size (fewer than asked when --seconds ran out);"
        "\np99 x: p99 at the large size over p99 at the small one (target: within 2x)."
    )
    record_targets(small, large)


def short(n: int) -> str:
    """10,000 -> "10k", 1,000,000 -> "1M" (the targets' names)."""
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % (scale // 10) == 0:
            return f"{n / scale:g}{unit}"
    return f"{n:,}"


def record_targets(small: Size, large: Size) -> None:
    """Issue 16: each targeted query's p99 at the large size over its p99 at the small."""
    for name, label in TARGETED.items():
        p99_small = percentile(small.latencies[name], 99)
        p99_large = percentile(large.latencies[name], 99)
        ratio = p99_large / p99_small
        record(
            f"{short(large.instances)} instances: {label} p99 vs {short(small.instances)}",
            f"ratio {ratio:.1f} (p99 {p99_large:.1f} ms vs {p99_small:.1f} ms)",
            f"<= {MAX_RATIO:g}x",
            ratio <= MAX_RATIO,
            f"p99 at {small.instances:,} instances, same run",
        )


# ---------------------------------------------------------------- running it


async def setup(settings: Settings, size: Size, run: str, now: datetime) -> None:
    schema_settings = settings.model_copy(update={"database_schema": size.schema})
    size.key = await prepare(schema_settings)
    await load(settings, size, run, now)


async def cleanup(settings: Settings, sizes: list[Size], run: str) -> None:
    """End this run's own sessions (a load interrupted by Ctrl-C may still run on the
    server) and drop its schemas."""
    conn = await asyncpg.connect(dsn(settings), ssl=False)
    try:
        await conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where application_name = $1 and pid <> pg_backend_pid()",
            f"bench_ops_{run}",
        )
    finally:
        await conn.close()
    for size in sizes:
        await drop_schema(settings.model_copy(update={"database_schema": size.schema}))


def serve_and_measure(sizes: list[Size], args: argparse.Namespace) -> None:
    """Start one API process per size and measure every query against each."""
    with contextlib.ExitStack() as stack:
        bases = []
        for size in sizes:
            port = free_port()
            env = dict(
                os.environ,
                CONVEYOR_DATABASE_SCHEMA=size.schema,
                CONVEYOR_HTTP_PORT=str(port),
                CONVEYOR_LOG_LEVEL="WARNING",
            )
            bases.append(f"http://127.0.0.1:{port}")
            api = [sys.executable, "-m", "engine.cli", "api"]
            stack.enter_context(process(api, env, f"{bases[-1]}/health"))

        async def run() -> None:
            async with contextlib.AsyncExitStack() as clients:
                servers = [
                    Server(
                        size,
                        base,
                        await clients.enter_async_context(
                            httpx.AsyncClient(
                                headers={"Authorization": f"Bearer {size.key}"},
                                timeout=120,
                                limits=httpx.Limits(max_connections=args.concurrency),
                            )
                        ),
                    )
                    for size, base in zip(sizes, bases, strict=True)
                ]
                await measure(servers, args)

        asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10_000, help="instances (baseline)")
    parser.add_argument("--large", type=int, default=1_000_000, help="instances")
    parser.add_argument("--quick", action="store_true", help="large = 100,000")
    parser.add_argument("--requests", type=int, default=200, help="per query and size")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--warmup", type=int, default=5, help="requests per query, unmeasured")
    parser.add_argument(
        "--seconds", type=float, default=15, help="at most, per query and size (fewer requests)"
    )
    args = parser.parse_args()
    if args.quick:
        args.large = 100_000
    run = uuid.uuid4().hex[:8]
    settings = Settings().model_copy(update={"log_level": "WARNING"})
    sizes = [
        Size("small", args.small, f"bench_ops_{run}_small"),
        Size("large", args.large, f"bench_ops_{run}_large"),
    ]
    now = datetime.now(UTC)
    # SIGTERM ends the run like Ctrl-C, so that the schemas are dropped either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for size in sizes:
            print(f"loading {size.instances:,} instances into {size.schema} ...", flush=True)
            asyncio.run(setup(settings, size, run, now))
        print("measuring ...", flush=True)
        serve_and_measure(sizes, args)
    finally:
        asyncio.run(cleanup(settings, sizes, run))
    report(sizes, args)


if __name__ == "__main__":
    main()
