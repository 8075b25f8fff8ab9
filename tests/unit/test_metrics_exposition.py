"""The metrics each process exposes: valid text, one family per name, HELP on every
metric, conventional names, and the worker's /metrics on its health port."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest

from api.metrics import Metrics
from engine.exposition import CONTENT_TYPE, process_registry
from engine.gauges import DatabaseGauges
from engine.liveness import HealthServer
from engine.messaging.metrics import WorkerCollector, WorkerMetrics
from engine.registry import Registry
from tests.metrics_support import one, samples

UNITS = ("_seconds", "_messages", "_bytes", "_triggers", "_partitions")


def busy_worker() -> WorkerMetrics:
    worker = WorkerMetrics()
    worker.transitions[("order", 2, "applied")] += 5
    worker.transitions[("", 0, "not_found")] += 1
    worker.dead_lettered["undecodable"] += 2
    worker.partition_lag[("shop.orders", 3)] = 7
    worker.batch_applied(10, 0.02)
    worker.messages = 11
    return worker


def test_the_api_registry_with_an_in_process_worker_has_one_family_per_name() -> None:
    metrics = Metrics()
    metrics.transitions.inc("order", "started", version=2)
    metrics.bind(Registry(), busy_worker())  # conveyor dev: the worker's counters show too
    found = list(metrics.registry.collect())
    names = [family.name for family in found]
    assert len(names) == len(set(names))
    page = samples(generate_latest(metrics.registry).decode())
    transitions = "conveyor_transitions_total"
    assert one(page, transitions, workflow="order", version="2", source="http") == 1
    assert one(page, transitions, workflow="order", version="2", source="kafka") == 5
    assert one(page, transitions, workflow="", version="", outcome="not_found") == 1
    assert one(page, "conveyor_dead_letters_total", reason="undecodable") == 2
    assert one(page, "conveyor_consumer_lag_messages", partition="3") == 7


def test_every_metric_has_help_and_a_conventional_name() -> None:
    metrics = Metrics()
    metrics.bind(Registry(), None)
    worker = process_registry(WorkerCollector(busy_worker()), DatabaseGauges())
    for family in [*metrics.registry.collect(), *worker.collect()]:
        assert family.documentation.strip(), family.name
        if not family.name.startswith("conveyor_"):
            continue  # the client library's process_* figures
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith(UNITS), family.name
        assert "__" not in family.name


def test_the_created_series_are_not_exposed() -> None:
    text = generate_latest(process_registry(WorkerCollector(busy_worker()))).decode()
    assert "_created" not in text


async def test_the_health_server_serves_metrics_beside_health() -> None:
    registry = process_registry(WorkerCollector(busy_worker()))

    async def page() -> bytes:
        return generate_latest(registry)

    server = HealthServer("127.0.0.1", 0, lambda: (True, {}), metrics=page)
    port = await server.start()
    try:
        status, headers, body = await _get(port, "/metrics")
        assert status == 200
        assert headers["content-type"] == CONTENT_TYPE
        assert one(samples(body.decode()), "conveyor_consumer_messages_total") == 11
        status, _headers, body = await _get(port, "/health")
        assert status == 200
        assert b'"status":"ok"' in body
    finally:
        await server.close()


async def test_without_a_metrics_page_the_health_server_answers_404() -> None:
    server = HealthServer("127.0.0.1", 0, lambda: (True, {}))
    port = await server.start()
    try:
        status, _headers, body = await _get(port, "/metrics")
        assert status == 404
        assert b"/metrics" not in body
    finally:
        await server.close()


async def _get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body
