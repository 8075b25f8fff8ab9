"""Serving the API for tests: in this process on a real socket, or as a `conveyor api`
process, both against the test's fresh schema; API keys of each scope."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from engine.auth import create_api_key
from engine.settings import Settings
from engine.store.database import create_engine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Keys:
    read: str
    write: str
    admin: str


async def make_keys(settings: Settings) -> Keys:
    db = create_engine(settings, pool_size=1)
    try:
        secrets = [
            (await create_api_key(db, f"test-{scope}", [scope])).secret
            for scope in ("read", "write", "admin")
        ]
    finally:
        await db.dispose()
    return Keys(*secrets)


@asynccontextmanager
async def serve_in_process(
    settings: Settings, configure: Callable[[Any], None] | None = None
) -> AsyncIterator[str]:
    """The app on a real loopback socket, in this event loop; yields the base URL.

    ``configure`` may adjust the app (e.g. its ``ctx``) before it starts."""
    port = free_port()
    app = create_app(settings, name=f"conveyor_test_{uuid.uuid4().hex[:8]}")
    if configure is not None:
        configure(app)
    app.config.TOUCHUP = False  # touch-up rewrites shared classes: once per process only
    # Sanic's AsyncioServer is untyped.
    server: Any = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()


def process_env(settings: Settings, port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CONVEYOR_DATABASE_URL=settings.database_url,
        CONVEYOR_DATABASE_SCHEMA=settings.database_schema or "",
        CONVEYOR_TOPIC_PREFIX=settings.topic_prefix,
        CONVEYOR_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        CONVEYOR_HTTP_PORT=str(port),
        CONVEYOR_LOG_FORMAT="json",
    )
    env.update(extra)  # may override any of the above
    return env


@contextmanager
def serve_process(settings: Settings, **extra_env: str) -> Iterator[tuple[str, Any]]:
    """`python -m engine.cli api` on a free port; yields (base URL, the Popen)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "api"],
        env=process_env(settings, port, **extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"api exited with {proc.returncode}:\n{out}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("api did not answer /health within 30 s")
            time.sleep(0.1)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_serving(
    proc: subprocess.Popen[bytes], base: str, log: Path, timeout: float = 30.0
) -> None:
    """Wait for ``base``'s /health to answer 200; fail with the process's output (written
    to ``log``) if it exits first or does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(
                f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
            )
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{base}/health did not answer within {timeout} s")
        time.sleep(0.1)


def order_data(order_id: str, total: str = "10") -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "c-1",
        "currency": "EUR",
        "items": [{"sku": "sku-1", "quantity": 2, "unit_price": str(int(total) / 2)}],
        "total": total,
    }
