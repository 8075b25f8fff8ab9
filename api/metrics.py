"""A small Prometheus registry (counters and histograms) and the ``/metrics`` endpoint.

No client library: the text exposition format is simple, and our needs are a handful of
labelled counters and histograms kept per process. What another process counts (the
worker's dead letters) is visible only when that worker runs in this process (``conveyor
dev``), consumer lag included (``conveyor_worker_lag``). The outbox backlog is queried from
the database at scrape time, so every process reports the same figure.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sanic import Blueprint, HTTPResponse, Request
from sanic.response import BaseHTTPResponse

from engine.store import outbox

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

Labels = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    """A monotonically increasing count per label values."""

    def __init__(self, name: str, help_: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_, tuple(labels)
        self._values: dict[Labels, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> Iterator[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self._values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(value)}"


class Histogram:
    """Observations in cumulative buckets, with their sum and count, per label values."""

    def __init__(
        self,
        name: str,
        help_: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        self.name, self.help, self.label_names = name, help_, tuple(labels)
        self.buckets = tuple(sorted(buckets))
        # Per label values: counts per bucket (not cumulative; the last is +Inf), sum.
        self._series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        series[0][bisect.bisect_left(self.buckets, value)] += 1
        series[1][0] += value

    def count(self, *labels: str) -> int:
        series = self._series.get(labels)
        return sum(series[0]) if series else 0

    def render(self) -> Iterator[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, (counts, total) in sorted(self._series.items()):
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += count
                le = f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{_labels(self.label_names, labels, le)} {cumulative}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {total[0]!r}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {cumulative}"


class Metrics:
    """The metrics of one API process."""

    def __init__(self) -> None:
        self.http_requests = Counter(
            "conveyor_http_requests_total",
            "HTTP requests answered, by method, route and status code.",
            ("method", "route", "status"),
        )
        self.http_latency = Histogram(
            "conveyor_http_request_duration_seconds",
            "Time from the first middleware to the response, by route.",
            ("route",),
        )
        self.transitions = Counter(
            "conveyor_transitions_total",
            "Starts and events handled by this process, by workflow and outcome.",
            ("workflow", "outcome"),
        )
        self.rejections = Counter(
            "conveyor_rejections_total",
            "Events the state machine refused, by workflow and reason.",
            ("workflow", "reason"),
        )
        self.commit_latency = Histogram(
            "conveyor_runtime_call_duration_seconds",
            "Runtime calls as a request waits for them (load, decide, persist, commit), by "
            "operation.",
            ("operation",),
        )
        self.decision_latency = Histogram(
            "conveyor_decision_duration_seconds",
            "The pure decision steps of one transaction (all its triggers).",
        )
        self.transaction_commit_latency = Histogram(
            "conveyor_commit_duration_seconds",
            "Writing a transaction's decisions and committing them.",
        )
        self.transaction_size = Histogram(
            "conveyor_transaction_triggers",
            "Triggers applied per transaction (group commit shares transactions).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
        )

    def transaction(self, *, triggers: int, decide_seconds: float, commit_seconds: float) -> None:
        """The runtime's observer hook (see ``engine.runtime.RuntimeObserver``)."""
        self.decision_latency.observe(decide_seconds)
        self.transaction_commit_latency.observe(commit_seconds)
        self.transaction_size.observe(triggers)

    def render(self, outbox_backlog: int | None, worker: Mapping[str, Any] | None = None) -> str:
        """The exposition text; ``worker`` is the snapshot of a worker in this process."""
        lines: list[str] = []
        for metric in (
            self.http_requests,
            self.http_latency,
            self.transitions,
            self.rejections,
            self.commit_latency,
            self.decision_latency,
            self.transaction_commit_latency,
            self.transaction_size,
        ):
            lines.extend(metric.render())
        if worker is not None:
            lines.extend(_worker_lines(worker))
        if outbox_backlog is not None:
            lines += [
                "# HELP conveyor_outbox_backlog Outbox messages not yet published to Kafka.",
                "# TYPE conveyor_outbox_backlog gauge",
                f"conveyor_outbox_backlog {outbox_backlog}",
            ]
        return "\n".join(lines) + "\n"


WORKER_GAUGES = frozenset(
    {
        "assigned_partitions",
        "lag",
        "stalled",
        "relay_leader",
        "seconds_since_poll",
        "seconds_since_progress",
    }
)


def _worker_lines(snapshot: Mapping[str, Any]) -> Iterator[str]:
    """A worker's counters (``dev`` runs one in the API process) in exposition format."""
    dead = snapshot.get("dead_lettered") or {}
    yield "# HELP conveyor_dead_letters_total Messages this process dead-lettered, by reason."
    yield "# TYPE conveyor_dead_letters_total counter"
    for reason, count in sorted(dead.items()):
        yield f'conveyor_dead_letters_total{{reason="{_escape(str(reason))}"}} {count}'
    for name, value in sorted(snapshot.items()):
        if name in ("dead_lettered", "dead_lettered_total") or not isinstance(
            value, bool | int | float
        ):
            continue
        gauge = name in WORKER_GAUGES or isinstance(value, bool)
        metric = f"conveyor_worker_{name}" + ("" if gauge else "_total")
        yield f"# TYPE {metric} {'gauge' if gauge else 'counter'}"
        yield f"{metric} {_number(float(value))}"


bp = Blueprint("metrics")


@bp.get("/metrics", ctx_scope="read")
async def metrics(request: Request) -> HTTPResponse:
    """Prometheus text format: HTTP traffic, transitions, rejections, latencies, backlog."""
    registry: Metrics = request.app.ctx.metrics
    backlog = await outbox.backlog(request.app.ctx.db)
    worker = getattr(request.app.ctx, "worker_metrics", None)
    snapshot = worker.snapshot() if worker is not None else None
    return HTTPResponse(registry.render(backlog, snapshot), content_type=CONTENT_TYPE)


def record_request(request: Request, response: BaseHTTPResponse) -> None:
    """Response middleware: count the request and observe its duration, by route pattern."""
    metrics: Metrics = request.app.ctx.metrics
    route = "/" + request.route.path if request.route is not None else "(unmatched)"
    metrics.http_requests.inc(request.method, route, str(response.status))
    started = getattr(request.ctx, "started", None)
    if started is not None:
        metrics.http_latency.observe(time.perf_counter() - started, route)
