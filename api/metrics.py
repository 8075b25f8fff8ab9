"""The API process's Prometheus metrics (prometheus_client) and the ``/metrics`` endpoint.

Each app has its own registry (:func:`engine.exposition.process_registry`): HTTP traffic
and latency, the starts and events it handled, the state machine's rejections, runtime
latencies, and the database's gauges read at scrape time (outbox backlog and age, overdue
timers, instances past their state's SLA), which every process reports alike. What a
worker counts is its own and served on the worker's port; ``conveyor dev`` runs one in
this process, so its counters show here too.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import Metric
from sanic import Blueprint, HTTPResponse, Request
from sanic.response import BaseHTTPResponse

from engine.exposition import CONTENT_TYPE, process_registry, render
from engine.gauges import DatabaseGauges
from engine.messaging.metrics import (
    TransitionKey,
    WorkerCollector,
    WorkerMetrics,
    transitions_family,
)
from engine.registry import Registry
from engine.slas import state_slas

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LabelledCounter:
    """A labelled prometheus_client counter, counted as the handlers do:
    ``inc(workflow, reason)``. Children are kept by label values: a request pays a dict
    lookup, not ``labels()``'s validation and lock."""

    def __init__(self, metric: Counter) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Counter] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.metric.labels(*labels)
        child.inc(amount)


class LabelledHistogram:
    """A labelled prometheus_client histogram: ``observe(seconds, route)`` (children kept
    by label values, as :class:`LabelledCounter` does)."""

    def __init__(self, metric: Histogram) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Histogram] = {}

    def observe(self, value: float, *labels: str) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.metric.labels(*labels)
        child.observe(value)


class Transitions:
    """Starts and events the API handled, by (workflow, version, outcome); a plain tally
    exported as ``conveyor_transitions_total{source="http"}``."""

    def __init__(self) -> None:
        self.counts: Tally[TransitionKey] = Tally()

    def inc(self, workflow: str, outcome: str, *, version: int = 0) -> None:
        self.counts[(workflow, version, outcome)] += 1


class Metrics:
    """The metrics of one API process, in a registry of its own (:attr:`registry`)."""

    def __init__(self) -> None:
        self.http_requests = LabelledCounter(
            Counter(
                "conveyor_http_requests",
                "HTTP requests answered, by method, route and status code.",
                ("method", "route", "status"),
                registry=None,
            )
        )
        self.http_latency = LabelledHistogram(
            Histogram(
                "conveyor_http_request_duration_seconds",
                "Time from the first middleware to the response, by route.",
                ("route",),
                registry=None,
                buckets=LATENCY_BUCKETS,
            )
        )
        self.transitions = Transitions()
        self.rejections = LabelledCounter(
            Counter(
                "conveyor_rejections",
                "Events the state machine refused (HTTP), by workflow and reason.",
                ("workflow", "reason"),
                registry=None,
            )
        )
        self.commit_latency = LabelledHistogram(
            Histogram(
                "conveyor_runtime_call_duration_seconds",
                "Runtime calls as a request waits for them (load, decide, persist, commit), "
                "by operation.",
                ("operation",),
                registry=None,
                buckets=LATENCY_BUCKETS,
            )
        )
        self.decision_latency = Histogram(
            "conveyor_decision_duration_seconds",
            "The pure decision steps of one transaction (all its triggers).",
            registry=None,
            buckets=LATENCY_BUCKETS,
        )
        self.transaction_commit_latency = Histogram(
            "conveyor_commit_duration_seconds",
            "Writing a transaction's decisions and committing them.",
            registry=None,
            buckets=LATENCY_BUCKETS,
        )
        self.transaction_size = Histogram(
            "conveyor_transaction_triggers",
            "Triggers applied per transaction (group commit shares transactions).",
            registry=None,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
        )
        self.gauges = DatabaseGauges()
        self.worker: WorkerMetrics | None = None
        self._bound = False
        self.registry = process_registry(
            self.http_requests.metric,
            self.http_latency.metric,
            _TransitionsCollector(self),
            self.rejections.metric,
            self.commit_latency.metric,
            self.decision_latency,
            self.transaction_commit_latency,
            self.transaction_size,
            self.gauges,
        )

    def bind(self, workflows: Registry, worker: WorkerMetrics | None) -> None:
        """Once, before the first scrape: watch the SLAs the workflows declare, and show
        the counters of a worker running in this process (``conveyor dev``)."""
        if self._bound:
            return
        self._bound = True
        self.gauges.slas = tuple(state_slas(workflows))
        if worker is not None:
            self.worker = worker
            self.registry.register(WorkerCollector(worker, transitions=False))

    def transaction(self, *, triggers: int, decide_seconds: float, commit_seconds: float) -> None:
        """The runtime's observer hook (see ``engine.runtime.RuntimeObserver``)."""
        self.decision_latency.observe(decide_seconds)
        self.transaction_commit_latency.observe(commit_seconds)
        self.transaction_size.observe(triggers)


class _TransitionsCollector:
    """``conveyor_transitions_total``: the API's counts, and an in-process worker's."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        sources = {"http": self.metrics.transitions.counts}
        if self.metrics.worker is not None:
            sources["kafka"] = self.metrics.worker.transitions
        return [transitions_family(sources)]


bp = Blueprint("metrics")


@bp.get("/metrics", ctx_scope="read")
async def metrics(request: Request) -> HTTPResponse:
    """Prometheus text format: HTTP traffic, transitions, rejections, latencies, the
    database's gauges (backlog, timers, SLA breaches)."""
    ctx = request.app.ctx
    registry: Metrics = ctx.metrics
    registry.bind(ctx.registry, getattr(ctx, "worker_metrics", None))
    body = await render(registry.registry, registry.gauges, getattr(ctx, "db", None))
    return HTTPResponse(body, content_type=CONTENT_TYPE)


def record_request(request: Request, response: BaseHTTPResponse) -> None:
    """Response middleware: count the request and observe its duration, by route pattern."""
    metrics: Metrics = request.app.ctx.metrics
    route = "/" + request.route.path if request.route is not None else "(unmatched)"
    metrics.http_requests.inc(request.method, route, str(response.status))
    started = getattr(request.ctx, "started", None)
    if started is not None:
        metrics.http_latency.observe(time.perf_counter() - started, route)
