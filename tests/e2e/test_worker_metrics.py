"""A `conveyor worker` process serves its own /metrics on its health port, scraped while
it applies a Kafka stream: what it counts is its own (transitions by workflow, version
and outcome, dead letters by reason, batches, lag per partition), beside the database's
gauges (outbox, timers)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
from prometheus_client.samples import Sample
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.settings import Settings
from tests.conftest import wait_for
from tests.e2e.http_support import free_port
from tests.e2e.test_worker_process import alive, worker, worker_env
from tests.integration.test_worker import ORDER_TO_DELIVERED, Message, order_events, produce
from tests.metrics_support import matching, one, samples, value

__all__ = ["worker_env"]  # the fixture, used below

ORDERS = 12
EVENTS = len(ORDER_TO_DELIVERED) - 1  # after each order's start


async def scrape(port: int) -> tuple[httpx.Response, list[Sample]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200, response.text
    return response, samples(response.text)


async def test_a_worker_process_serves_its_own_metrics_while_consuming(
    settings: Settings, db: AsyncEngine, worker_env: dict[str, str], tmp_path: Path
) -> None:
    topic = f"{settings.topic_prefix}.in"
    port = free_port()
    env = {**worker_env, "CONVEYOR_WORKER_HEALTH_PORT": str(port)}
    log = tmp_path / "worker.log"
    keys = [f"m-{i}" for i in range(ORDERS)]
    undecodable: Message = ("", b"m-0", b"\x00 not a cloud event", [])
    # An event for an order nobody started: no instance to apply it to.
    (_t, _k, orphan, headers) = order_events("m-nobody")[1]
    no_instance: Message = ("", b"m-nobody", orphan, headers)

    with worker(env, log) as proc:
        check = alive(proc, log)

        async def consuming() -> bool:
            check()
            return '"event":"partitions assigned"' in log.read_text()

        await wait_for(consuming, timeout=30)
        response, page = await scrape(port)
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert one(page, "conveyor_consumer_messages_total") == 0
        assert one(page, "conveyor_consumer_in_group") == 1
        assert one(page, "conveyor_consumer_assigned_partitions") > 0
        assert matching(page, "process_resident_memory_bytes")  # the process's own figures
        assert not matching(page, "conveyor_http_requests_total")  # the API's, not here

        await produce(
            settings,
            topic,
            [*[m for k in keys for m in order_events(k)], undecodable, no_instance],
        )

        async def all_counted() -> list[Sample] | None:
            check()
            _response, page = await scrape(port)
            applied = value(page, "conveyor_transitions_total", workflow="order", outcome="applied")
            dead = value(page, "conveyor_dead_letters_total")
            return page if applied == ORDERS * EVENTS and dead == 2 else None

        page = await wait_for(all_counted, timeout=45)
        order_v1 = {"workflow": "order", "version": "1", "source": "kafka"}
        assert one(page, "conveyor_transitions_total", outcome="started", **order_v1) == ORDERS
        assert one(page, "conveyor_transitions_total", outcome="applied", **order_v1) == (
            ORDERS * EVENTS
        )
        assert one(page, "conveyor_dead_letters_total", reason="undecodable") == 1
        assert one(page, "conveyor_dead_letters_total", reason="no_instance") == 1
        messages = ORDERS * len(ORDER_TO_DELIVERED) + 2
        assert one(page, "conveyor_consumer_messages_total") == messages
        assert one(page, "conveyor_consumer_batch_messages_sum") == messages
        batches = one(page, "conveyor_consumer_batch_messages_count")
        assert batches >= 1
        assert one(page, "conveyor_consumer_batch_apply_duration_seconds_count") == batches
        assert one(page, "conveyor_consumer_batches_total") >= 1

        # The database's gauges, read at scrape time.
        assert one(page, "conveyor_outbox_backlog_messages") >= 0
        assert one(page, "conveyor_outbox_oldest_unpublished_age_seconds") >= 0
        assert one(page, "conveyor_timers_overdue") == 0
        assert one(page, "conveyor_timer_lag_seconds") == 0
        assert one(page, "conveyor_database_gauges_read_timestamp_seconds") > 0

        # Lag per partition of the input topic, as of the liveness check (every 5 s).
        async def lag_per_partition() -> list[Sample]:
            check()
            _response, page = await scrape(port)
            return matching(page, "conveyor_consumer_lag_messages", topic=topic)

        lags = await wait_for(lag_per_partition, timeout=20)
        assert {s.labels["partition"] for s in lags} == {str(p) for p in range(6)}
        assert all(s.value >= 0 for s in lags)

        async with httpx.AsyncClient(timeout=10) as client:
            health = await client.get(f"http://127.0.0.1:{port}/health")
            missing = await client.get(f"http://127.0.0.1:{port}/nope")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert missing.status_code == 404
        assert "/metrics" in missing.json()["paths"]

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 25) == 0, log.read_text()[-3000:]
