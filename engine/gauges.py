"""Gauges read from PostgreSQL when ``/metrics`` is scraped, for every process alike.

The outbox backlog and the age of its oldest message, the timers past due and how late
the oldest is, and (where the caller knows the workflows' SLAs) the instances past their
state's SLA. A scrape refreshes them at most every ``min_interval`` seconds and waits at
most ``timeout`` seconds for the database; when it does not answer, the last figures are
served, with the time they were read, so that a database outage never fails a scrape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.clock import Clock, utc_now
from engine.observability import get_logger
from engine.slas import StateSla
from engine.store.gauges import (
    OutboxBacklog,
    OverdueTimers,
    outbox_backlog,
    overdue_timers,
    sla_breaches,
)

log = get_logger("conveyor.metrics")


class DatabaseGauges(Collector):
    """The database's figures as a prometheus_client collector; :meth:`refresh` reads them."""

    def __init__(
        self,
        *,
        slas: Sequence[StateSla] = (),
        now: Clock = utc_now,
        min_interval: float = 5.0,
        timeout: float = 2.0,
    ) -> None:
        self.slas = tuple(slas)
        self.now = now
        self.min_interval = min_interval
        self.timeout = timeout
        self.outbox: OutboxBacklog | None = None
        self.timers: OverdueTimers | None = None
        self.breaches: dict[tuple[str, str], int] = {}
        self.read_at: datetime | None = None  # when the figures above were read
        self.errors = 0
        self._tried_at = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self, db: AsyncEngine | None) -> None:
        """Read the figures again unless they are fresh; never raises."""
        if db is None:
            return
        async with self._lock:  # concurrent scrapes share one round of queries
            if time.monotonic() - self._tried_at < self.min_interval:
                return
            self._tried_at = time.monotonic()
            now = self.now()
            try:
                async with asyncio.timeout(self.timeout):
                    backlog = await outbox_backlog(db)
                    timers = await overdue_timers(db, now)
                    breaches = await sla_breaches(db, self.slas, now)
            except Exception as exc:  # an outage must not fail the scrape: keep the last
                self.errors += 1
                log.warning(
                    "metrics: database figures unavailable; serving the last ones",
                    error=f"{type(exc).__name__}: {exc}",
                )
                return
            self.outbox, self.timers, self.breaches, self.read_at = backlog, timers, breaches, now

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        errors = CounterMetricFamily(
            "conveyor_database_gauges_errors",
            "Scrapes whose database figures could not be read (the last ones were served).",
        )
        errors.add_metric([], self.errors)
        yield errors
        read_at = self.read_at
        if read_at is None:
            return  # never read: unknown, so absent
        yield _gauge(
            "conveyor_database_gauges_read_timestamp_seconds",
            "When the database figures below were read (Unix time).",
            read_at.timestamp(),
        )
        if self.outbox is not None:
            yield _gauge(
                "conveyor_outbox_backlog_messages",
                "Outbox messages not yet published to Kafka (all relays together).",
                self.outbox.messages,
            )
            yield _gauge(
                "conveyor_outbox_oldest_unpublished_age_seconds",
                "Age of the oldest outbox message not yet published (0 when none waits).",
                _age(read_at, self.outbox.oldest_created_at),
            )
        if self.timers is not None:
            yield _gauge(
                "conveyor_timers_overdue",
                "Timers past their due time that have not fired yet.",
                self.timers.timers,
            )
            yield _gauge(
                "conveyor_timer_lag_seconds",
                "How long the oldest overdue timer has been due (0 when none is).",
                _age(read_at, self.timers.oldest_due_at),
            )
        if self.slas:
            breached = GaugeMetricFamily(
                "conveyor_instances_sla_breached",
                "Live instances that have been in their state longer than its SLA, by "
                "workflow and state (states that declare an SLA).",
                labels=("workflow", "state"),
            )
            for (workflow, state), count in sorted(self.breaches.items()):
                breached.add_metric([workflow, state], count)
            yield breached


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _age(now: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())


__all__ = ["DatabaseGauges"]
