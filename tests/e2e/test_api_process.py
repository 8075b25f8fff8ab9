"""The API as a user runs it: a `conveyor api` process answering over real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def api_process(**env: str) -> Iterator[str]:
    port = free_port()
    full_env = dict(os.environ, CONVEYOR_HTTP_PORT=str(port), CONVEYOR_LOG_FORMAT="json", **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "api"],
        env=full_env,
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
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_ready_answers_200_when_postgres_and_kafka_are_up() -> None:
    with api_process() as base:
        response = httpx.get(f"{base}/ready", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["checks"] == {"postgresql": {"status": "up"}, "kafka": {"status": "up"}}


def test_ready_answers_503_problem_naming_kafka_when_kafka_is_unreachable() -> None:
    dead = f"127.0.0.1:{free_port()}"
    with api_process(CONVEYOR_KAFKA_BOOTSTRAP_SERVERS=dead) as base:
        started = time.monotonic()
        response = httpx.get(f"{base}/ready", timeout=10)
        elapsed = time.monotonic() - started
        health = httpx.get(f"{base}/health", timeout=5)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 503
    assert "kafka" in body["detail"]
    assert body["checks"]["kafka"]["status"] == "down"
    assert body["checks"]["postgresql"]["status"] == "up"
    assert elapsed < 10, "readiness must answer within its bounded checks"
    assert health.status_code == 200


def test_ready_names_postgres_when_the_database_is_unreachable() -> None:
    url = f"postgresql+asyncpg://conveyor:conveyor@127.0.0.1:{free_port()}/conveyor"
    with api_process(CONVEYOR_DATABASE_URL=url) as base:
        response = httpx.get(f"{base}/ready", timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["postgresql"]["status"] == "down"
    assert body["checks"]["kafka"]["status"] == "up"


def test_unknown_route_is_a_problem_json_404() -> None:
    with api_process() as base:
        response = httpx.get(f"{base}/no/such/thing", timeout=5)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 404
