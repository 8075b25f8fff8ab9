"""A process's Prometheus registry and the text a ``/metrics`` scrape gets.

Each process (and each app or worker a test builds) has its own
:class:`~prometheus_client.CollectorRegistry`, never the library's global one, so that
several can live in one interpreter. The database's figures are refreshed (bounded, and
never failing) just before the registry is rendered.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.gauges import DatabaseGauges

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def process_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry with ``collectors`` and the process's own figures (CPU, memory, files)."""
    # No ``*_created`` series (a timestamp per counter and histogram): Prometheus itself
    # does not need them, and they double the text. The switch is process-wide.
    disable_created_metrics()  # type: ignore[no-untyped-call]  # (untyped upstream)
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


async def render(
    registry: CollectorRegistry, gauges: DatabaseGauges, db: AsyncEngine | None
) -> bytes:
    """The exposition text, with the database figures as fresh as ``gauges`` allows."""
    await gauges.refresh(db)
    return generate_latest(registry)


__all__ = ["CONTENT_TYPE", "process_registry", "render"]
