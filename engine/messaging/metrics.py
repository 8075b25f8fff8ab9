"""Counters a worker keeps about its own work, and their Prometheus exposition.

The worker owns one :class:`WorkerMetrics`, logs it periodically, and serves it on its
``/metrics`` endpoint through :class:`WorkerCollector` (``conveyor dev`` shows it on the
API's ``/metrics`` too). The hot path only adds to plain integers and dicts (one event
costs a dict increment); the collector turns them into metric families when scraped.
Latency and batch sizes are observed once per batch.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

TransitionKey = tuple[str, int, str]
"""(workflow, version, outcome); workflow "" and version 0 where the instance is unknown."""

APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENESS_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def _apply_histogram() -> Histogram:
    return Histogram(
        "conveyor_consumer_batch_apply_duration_seconds",
        "Time to apply one consumed batch through the runtime (all its transactions), "
        "excluding retries after transient errors.",
        buckets=APPLY_BUCKETS,
        registry=None,
    )


def _lateness_histogram() -> Histogram:
    return Histogram(
        "conveyor_schedule_tick_lateness_seconds",
        "How long after its time a schedule tick fired (scheduled ticks, not manual ones).",
        buckets=LATENESS_BUCKETS,
        registry=None,
    )


def _batch_histogram() -> Histogram:
    return Histogram(
        "conveyor_consumer_batch_messages",
        "Kafka messages per applied batch.",
        buckets=BATCH_BUCKETS,
        registry=None,
    )


@dataclass(slots=True)
class WorkerMetrics:
    """Plain counters (monotonic) and a few gauges; single event loop, so no locks."""

    messages: int = 0  # Kafka messages taken from getmany
    batches: int = 0  # batches fully processed and committed
    started: int = 0  # instances created by a start event
    applied: int = 0  # transitions taken
    duplicates: int = 0  # events (or starts) seen before: no effect
    rejected: int = 0  # refused by the state machine, recorded in history
    failed: int = 0  # an action kept raising: the instance was marked failed
    retrying: int = 0  # an action raised: the instance waits for a retry timer
    parked: int = 0  # events for a retrying instance, waiting behind its retry
    stale: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)  # by reason
    commit_failures: int = 0  # Kafka offset commits that failed (rebalance): redelivered
    batch_retries: int = 0  # batches retried after a transient database or Kafka error
    rebalances: int = 0
    assigned_partitions: int = 0
    stalls: int = 0  # times the liveness check found the consumer making no progress
    stalled: bool = False
    consumer_restarts: int = 0  # stalled consumers replaced by a new one
    consumer_in_group: bool = False  # false before joining, and while out for a db outage
    lag: int = 0  # messages in the assigned partitions not yet consumed (every 5 s)
    outbox_published: int = 0
    relay_errors: int = 0
    relay_leader: bool = False
    last_poll_at: float = field(default_factory=time.monotonic)
    last_progress_at: float = field(default_factory=time.monotonic)
    # Deliveries by (workflow, version, outcome): starts, events, duplicates, rejections.
    transitions: Counter[TransitionKey] = field(default_factory=Counter)
    # Lag per assigned (topic, partition), as of the last liveness check.
    partition_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    apply_seconds: Histogram = field(default_factory=_apply_histogram)
    batch_messages: Histogram = field(default_factory=_batch_histogram)
    # Schedule ticks recorded by (schedule, outcome), and how late the fired ones were.
    schedule_ticks: Counter[tuple[str, str]] = field(default_factory=Counter)
    schedule_lateness: Histogram = field(default_factory=_lateness_histogram)

    def batch_applied(self, messages: int, seconds: float) -> None:
        """One batch went through the runtime: observe its size and how long it took."""
        self.apply_seconds.observe(seconds)
        self.batch_messages.observe(messages)

    def snapshot(self) -> dict[str, Any]:
        """The counters as a flat JSON-able dict (``dead_lettered`` by reason)."""
        now = time.monotonic()
        return {
            "messages": self.messages,
            "batches": self.batches,
            "started": self.started,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "failed": self.failed,
            "retrying": self.retrying,
            "parked": self.parked,
            "stale": self.stale,
            "dead_lettered": dict(self.dead_lettered),
            "dead_lettered_total": sum(self.dead_lettered.values()),
            "commit_failures": self.commit_failures,
            "batch_retries": self.batch_retries,
            "rebalances": self.rebalances,
            "assigned_partitions": self.assigned_partitions,
            "stalls": self.stalls,
            "stalled": self.stalled,
            "consumer_restarts": self.consumer_restarts,
            "consumer_in_group": self.consumer_in_group,
            "lag": self.lag,
            "outbox_published": self.outbox_published,
            "relay_errors": self.relay_errors,
            "relay_leader": self.relay_leader,
            "seconds_since_poll": round(now - self.last_poll_at, 3),
            "seconds_since_progress": round(now - self.last_progress_at, 3),
        }


def transitions_family(sources: Mapping[str, Mapping[TransitionKey, int]]) -> CounterMetricFamily:
    """``conveyor_transitions_total`` from the counts of each source (``kafka``, ``http``)."""
    family = CounterMetricFamily(
        "conveyor_transitions",
        "Starts and events this process handled, by workflow, version, outcome (applied, "
        "started, duplicate, rejected, failed, retrying, parked, stale, not_found, ...) and "
        "source (kafka, http).",
        labels=("workflow", "version", "outcome", "source"),
    )
    for source, counts in sources.items():
        for (workflow, version, outcome), count in sorted(counts.items()):
            family.add_metric([workflow, str(version) if version else "", outcome, source], count)
    return family


# (attribute, metric name without _total, help) of the plain counters.
_COUNTERS = (
    ("messages", "conveyor_consumer_messages", "Kafka messages taken from the input topics."),
    ("batches", "conveyor_consumer_batches", "Consumed batches applied and committed."),
    (
        "batch_retries",
        "conveyor_consumer_batch_retries",
        "Batches retried after a transient database or Kafka error.",
    ),
    (
        "commit_failures",
        "conveyor_consumer_commit_failures",
        "Kafka offset commits that failed (their messages are redelivered as duplicates).",
    ),
    ("rebalances", "conveyor_consumer_rebalances", "Consumer group rebalances seen."),
    (
        "stalls",
        "conveyor_consumer_stalls",
        "Times the liveness check found the consumer making no progress.",
    ),
    (
        "consumer_restarts",
        "conveyor_consumer_restarts",
        "Stalled Kafka consumers replaced by a new one.",
    ),
    (
        "outbox_published",
        "conveyor_relay_published_messages",
        "Outbox messages this process's relay published to Kafka.",
    ),
    ("relay_errors", "conveyor_relay_errors", "Relay rounds that failed and were retried."),
)


class WorkerCollector:
    """Exposes a :class:`WorkerMetrics` to a prometheus_client registry at scrape time.

    ``transitions=False`` leaves ``conveyor_transitions_total`` to a caller that merges
    it with its own counts (the API process of ``conveyor dev``).
    """

    def __init__(self, metrics: WorkerMetrics, *, transitions: bool = True) -> None:
        self.metrics = metrics
        self.transitions = transitions

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        m = self.metrics
        if self.transitions:
            yield transitions_family({"kafka": m.transitions})
        dead = CounterMetricFamily(
            "conveyor_dead_letters",
            "Messages this process dead-lettered, by reason.",
            labels=("reason",),
        )
        for reason, count in sorted(m.dead_lettered.items()):
            dead.add_metric([reason], count)
        yield dead
        for attribute, name, documentation in _COUNTERS:
            yield CounterMetricFamily(name, documentation, value=getattr(m, attribute))
        yield from m.apply_seconds.collect()
        yield from m.batch_messages.collect()
        ticks = CounterMetricFamily(
            "conveyor_schedule_ticks",
            "Schedule ticks this process recorded, by schedule and outcome (started, "
            "existing, conflict, published, skipped, failed).",
            labels=("schedule", "outcome"),
        )
        for (schedule, outcome), count in sorted(m.schedule_ticks.items()):
            ticks.add_metric([schedule, outcome], count)
        yield ticks
        yield from m.schedule_lateness.collect()
        lag = GaugeMetricFamily(
            "conveyor_consumer_lag_messages",
            "Messages in an assigned partition not yet consumed (as of the last liveness "
            "check, every few seconds).",
            labels=("topic", "partition"),
        )
        for (topic, partition), behind in sorted(m.partition_lag.items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
        now = time.monotonic()
        gauges: tuple[tuple[str, str, float], ...] = (
            (
                "conveyor_consumer_assigned_partitions",
                "Partitions assigned to this process's consumer.",
                m.assigned_partitions,
            ),
            (
                "conveyor_consumer_in_group",
                "1 while the consumer is a member of its group (0 before joining, and while "
                "it stays out during a database outage).",
                int(m.consumer_in_group),
            ),
            (
                "conveyor_consumer_stalled",
                "1 while the consumer makes no progress although its partitions have lag.",
                int(m.stalled),
            ),
            (
                "conveyor_consumer_last_poll_age_seconds",
                "Time since the consumer last polled Kafka.",
                now - m.last_poll_at,
            ),
            (
                "conveyor_consumer_last_progress_age_seconds",
                "Time since the consumer last committed a batch.",
                now - m.last_progress_at,
            ),
            (
                "conveyor_relay_leader",
                "1 while this process's relay holds the outbox leadership.",
                int(m.relay_leader),
            ),
        )
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=value)


__all__ = ["TransitionKey", "WorkerCollector", "WorkerMetrics", "transitions_family"]
