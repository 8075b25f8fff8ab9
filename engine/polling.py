"""The loop of a service that polls PostgreSQL for work (due timers, bulk jobs).

One round at a time: at once again while a round says more work is waiting, else after
``poll_interval``. A round that fails is logged and retried with backoff up to
``retry_max``; an unreachable database also counts on the worker's outage clock
(:class:`engine.liveness.DatabaseOutage`), which a round that succeeds resets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from engine.liveness import DatabaseOutage
from engine.observability import get_logger
from engine.transient import is_database_unavailable

log = get_logger("conveyor.polling")


async def poll(
    round_: Callable[[], Awaitable[bool]],
    stop: asyncio.Event,
    *,
    name: str,
    poll_interval: float,
    retry_max: float,
    outage: DatabaseOutage,
) -> None:
    """Run ``round_`` until ``stop`` is set; it returns whether more work waits now."""
    delay = poll_interval
    while not stop.is_set():
        try:
            more = await round_()
        except Exception as exc:  # the loop must survive whatever one round meets
            if is_database_unavailable(exc):
                outage.failed(exc)
                log.warning(
                    f"{name} round failed; retrying",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=delay,
                )
            else:
                log.exception(f"{name} round failed", retry_in=delay)
            await _wait(stop, delay)
            delay = min(delay * 2, retry_max)
            continue
        outage.succeeded()
        delay = poll_interval
        if not more:
            await _wait(stop, poll_interval)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


__all__ = ["poll"]
