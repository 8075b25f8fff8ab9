"""HTTP API benchmark: requests/s and p99 for start, get and send-event, next to a Sanic
hello-world measured in the same run.

Runs one `conveyor api` process (one Sanic worker) on a fresh schema of the local
PostgreSQL, and drives it over loopback with wrk (apt install wrk) or, without wrk, an
asyncio + httpx load generator (much slower: it measures itself as much as the server).
The server, PostgreSQL and the load generator share the machine's cores: read the
figures as a floor. A script, not a test; bounded by --seconds per scenario.

Each scenario runs --runs times (median), each run after a hello-world run (their median
is the baseline); with wrk at 32 connections it records issue 16's targets (each
scenario's req/s as a share of hello-world's, and p99) with bench/targets.py.

    .venv/bin/python bench/http_api.py --seconds 10 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from targets import record

from engine.auth import create_api_key
from engine.settings import Settings
from engine.store.database import create_engine, driver_connection
from engine.store.migrations import upgrade

HELLO = """
from sanic import Sanic, json
app = Sanic("hello")
@app.get("/")
async def hello(request):
    return json({"hello": "world"})
app.run(host="127.0.0.1", port=int(__import__("sys").argv[1]), single_process=True,
        access_log=False, motd=False)
"""

# wrk scripts: each prints one JSON line with the figures when done.
DONE = """
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, '
    .. '"errors": %d, "non2xx": %d}\\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout, summary.errors.status))
end
"""
THREADS = """
local counter = 0
local threads = {}
setup = function(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
"""
START = (
    THREADS
    + """
request = function()
  counter = counter + 1
  local key = "bench-" .. RUN .. "-" .. tid .. "-" .. counter
  local body = '{"business_key":"' .. key .. '","data":{"order_id":"' .. key
    .. '","customer_id":"c-1","currency":"EUR","items":[{"sku":"s-1","quantity":2,'
    .. '"unit_price":"5"}],"total":"10"}}'
  return wrk.format("POST", "/v1/workflows/order/instances",
    {["Authorization"] = "Bearer " .. KEY, ["Content-Type"] = "application/json"}, body)
end
"""
    + DONE
)
IDS = """
local ids = {}
init = function(args)
  local i = 0
  for line in io.lines(IDS_FILE) do
    i = i + 1
    if i % NTHREADS == (tid - 1) then table.insert(ids, line) end
  end
end
"""
GET = (
    THREADS
    + IDS
    + """
request = function()
  counter = counter + 1
  local id = ids[(counter % #ids) + 1]
  return wrk.format("GET", "/v1/instances/" .. id, {["Authorization"] = "Bearer " .. KEY})
end
"""
    + DONE
)
SEND = (
    THREADS
    + IDS
    + """
request = function()
  counter = counter + 1
  local id = ids[counter] or ids[#ids]
  local body = '{"type":"payment.initiated","payload":{"payment_id":"p-' .. counter
    .. '","provider":"bench"}}'
  return wrk.format("POST", "/v1/instances/" .. id .. "/events",
    {["Authorization"] = "Bearer " .. KEY, ["Content-Type"] = "application/json"}, body)
end
"""
    + DONE
)
HELLO_SCRIPT = DONE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within 30 s")


@contextmanager
def process(args: list[str], env: dict[str, str], probe: str) -> Iterator[None]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(probe, proc)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_wrk(
    url: str, script: str, values: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    header = "".join(f"{name} = {json.dumps(value)}\n" for name, value in values.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(header + script)
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{args.threads}",
                f"-c{args.connections}",
                f"-d{args.seconds}s",
                "-s",
                handle.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=args.seconds + 60,
        ).stdout
    finally:
        os.unlink(handle.name)
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


async def run_httpx(
    method: str,
    url: str,
    bodies: Any,
    headers: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + args.seconds
    async with httpx.AsyncClient(
        headers=headers, limits=httpx.Limits(max_connections=args.connections)
    ) as client:

        async def user() -> None:
            nonlocal errors
            while time.monotonic() < stop:
                target, body = bodies()
                started = time.perf_counter()
                response = await client.request(method, url + target, content=body)
                latencies.append(time.perf_counter() - started)
                errors += response.status_code >= 300

        begun = time.monotonic()
        await asyncio.gather(*(user() for _ in range(args.connections)))
        elapsed = time.monotonic() - begun
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": 0,
        "non2xx": errors,
    }


async def prepare(settings: Settings) -> str:
    await upgrade(settings)
    db = create_engine(settings, pool_size=1)
    try:
        return (await create_api_key(db, "bench", "admin")).secret
    finally:
        await db.dispose()


async def instance_ids(settings: Settings, run: str) -> list[str]:
    db = create_engine(settings, pool_size=1)
    try:
        async with driver_connection(db) as conn:
            rows = await conn.fetch(
                "select id from instances where business_key like $1 and state = 'placed'"
                " order by random()",
                f"bench-{run}-%",
            )
    finally:
        await db.dispose()
    return [str(r["id"]) for r in rows]


async def drop_schema(settings: Settings) -> None:
    db = create_engine(settings.model_copy(update={"database_schema": None}), pool_size=1)
    try:
        async with driver_connection(db) as conn:
            await conn.execute(f'drop schema if exists "{settings.database_schema}" cascade')
    finally:
        await db.dispose()


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose rate is the median (its latencies come with it)."""
    ordered = sorted(runs, key=rate)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per scenario")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per scenario (median)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--pool-size", type=int, default=20, help="database connections")
    parser.add_argument("--httpx", action="store_true", help="use httpx even if wrk exists")
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not args.httpx
    run = uuid.uuid4().hex[:8]
    settings = Settings().model_copy(
        update={"database_schema": f"bench_http_{run}", "log_level": "WARNING"}
    )
    key = asyncio.run(prepare(settings))
    api_port, hello_port = free_port(), free_port()
    env = dict(
        os.environ,
        CONVEYOR_DATABASE_SCHEMA=settings.database_schema or "",
        CONVEYOR_HTTP_PORT=str(api_port),
        CONVEYOR_LOG_LEVEL="WARNING",
        CONVEYOR_DATABASE_POOL_SIZE=str(args.pool_size),
    )
    api = f"http://127.0.0.1:{api_port}"
    hello = f"http://127.0.0.1:{hello_port}"
    results: dict[str, dict[str, Any]] = {}
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with (
            process([sys.executable, "-c", HELLO, str(hello_port)], env, hello),
            process([sys.executable, "-m", "engine.cli", "api"], env, f"{api}/health"),
        ):
            values: dict[str, Any] = {"KEY": key, "RUN": run, "NTHREADS": args.threads}
            if use_wrk:
                # A hello-world run before each run of each scenario, so that the baseline
                # sees the same machine (other processes come and go on it).
                hellos: list[dict[str, Any]] = []
                starts = []
                for attempt in range(args.runs):
                    hellos.append(run_wrk(hello + "/", HELLO_SCRIPT, values, args))
                    # Fresh business keys for each run (a repeated key is a 409).
                    starts.append(run_wrk(api, START, {**values, "RUN": f"{run}-{attempt}"}, args))
                results["start"] = median_run(starts)
            else:
                counter = iter(range(10**9))

                def start_body() -> tuple[str, bytes]:
                    k = f"bench-{run}-0-{next(counter)}"
                    data = {
                        "order_id": k,
                        "customer_id": "c-1",
                        "currency": "EUR",
                        "items": [{"sku": "s-1", "quantity": 2, "unit_price": "5"}],
                        "total": "10",
                    }
                    return "", json.dumps({"business_key": k, "data": data}).encode()

                results["hello world"] = asyncio.run(
                    run_httpx("GET", hello + "/", lambda: ("", b""), {}, args)
                )
                results["start"] = asyncio.run(
                    run_httpx("POST", api + "/v1/workflows/order/instances", start_body, auth, args)
                )
            ids = asyncio.run(instance_ids(settings, run))
            # Each send run moves its own share of the fresh instances once.
            shares = [ids[i :: args.runs] for i in range(args.runs)] if use_wrk else [ids]
            files = []
            for share in shares:
                with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as handle:
                    handle.write("\n".join(share) + "\n")
                files.append(handle.name)
            values["IDS_FILE"] = files[0]
            try:
                if use_wrk:
                    gets = []
                    for _ in range(args.runs):
                        hellos.append(run_wrk(hello + "/", HELLO_SCRIPT, values, args))
                        gets.append(run_wrk(api, GET, values, args))
                    results["get"] = median_run(gets)
                    sends = []
                    for name in files:
                        hellos.append(run_wrk(hello + "/", HELLO_SCRIPT, values, args))
                        sends.append(run_wrk(api, SEND, {**values, "IDS_FILE": name}, args))
                    results["send event"] = median_run(sends)
                    results = {"hello world": median_run(hellos), **results}
                else:
                    cycle = iter(ids * 1000)
                    results["get"] = asyncio.run(
                        run_httpx(
                            "GET", api + "/v1/instances/", lambda: (next(cycle), b""), auth, args
                        )
                    )
                    fresh = iter(ids)
                    body = (
                        b'{"type":"payment.initiated","payload":{"payment_id":"p","provider":"b"}}'
                    )
                    results["send event"] = asyncio.run(
                        run_httpx(
                            "POST",
                            api + "/v1/instances/",
                            lambda: (f"{next(fresh)}/events", body),
                            auth,
                            args,
                        )
                    )
            finally:
                for name in files:
                    os.unlink(name)
    finally:
        asyncio.run(drop_schema(settings))
    report(results, args, use_wrk, len(ids))


# Issue 16: each scenario's rate as a share of hello-world's, and p99 at 32 connections.
GOALS = {"start": 0.35, "send event": 0.30, "get": 0.65}
TARGET_NAMES = {
    "start": "http: start instance (ratio of hello-world)",
    "send event": "http: send event (ratio of hello-world)",
    "get": "http: get instance (ratio of hello-world)",
}
P99_GOAL_MS = 50.0


def rate(figures: dict[str, Any]) -> float:
    """Answered requests per second, counting 2xx answers only (a send run that used up
    its instances gets 409s, which are cheaper and would flatter it)."""
    ok = figures["requests"] - figures["non2xx"] - figures["errors"]
    return float(ok) / float(figures["seconds"])


def report(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, use_wrk: bool, started: int
) -> None:
    generator = "wrk" if use_wrk else "httpx"
    runs = f"median of {args.runs} runs" if use_wrk else "1 run each"
    print(
        f"\nHTTP API, one process, {args.connections} connections, {args.seconds} s per "
        f"scenario, {runs} (hello world: median of the runs before each), load generator: "
        f"{generator} (same {os.cpu_count()}-core machine)\n"
    )
    base = rate(results["hello world"])
    print(
        f"{'scenario':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'vs hello':>9}"
    )
    for name, figures in results.items():
        print(
            f"{name:<12} {rate(figures):>9.0f} {figures['p50_ms']:>8.2f} "
            f"{figures['p99_ms']:>8.2f} {figures['non2xx'] + figures['errors']:>8} "
            f"{rate(figures) / base:>9.2f}"
        )
    print(
        f"\n{started} instances were started; each 'send event' run moves its own share of "
        "them once (placed -> payment_pending); requests beyond that are rejected (409) and "
        "counted as non-2xx, not in req/s."
    )
    if not use_wrk or args.connections != 32:
        return  # the targets are wrk's figures at 32 connections
    baseline = f"hello-world {base:,.0f} req/s"
    for name, goal in GOALS.items():
        ratio = rate(results[name]) / base
        record(
            TARGET_NAMES[name],
            f"{ratio:.2f} ({rate(results[name]):,.0f} req/s)",
            f">= {goal:.2f}",
            ratio >= goal,
            baseline,
        )
    p99s = {name: float(results[name]["p99_ms"]) for name in GOALS}
    record(
        "http: p99 at 32 connections",
        ", ".join(f"{name} {p99:.1f} ms" for name, p99 in p99s.items()),
        f"< {P99_GOAL_MS:g} ms each",
        all(p99 < P99_GOAL_MS for p99 in p99s.values()),
        f"hello-world p99 {float(results['hello world']['p99_ms']):.1f} ms",
    )


if __name__ == "__main__":
    main()
