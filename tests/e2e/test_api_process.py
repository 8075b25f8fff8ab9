"""The API as a user runs it: a `conveyor api` process answering over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from engine.settings import Settings
from tests.e2e.http_support import free_port, serve_process


@contextmanager
def api_process(**env: str) -> Iterator[str]:
    with serve_process(Settings(), **env) as (base, _proc):
        yield base


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
