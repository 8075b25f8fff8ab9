"""Counters a worker keeps about its own work; the worker owns one object, logs it
periodically, and the HTTP ``/metrics`` endpoint can read it."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


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
