"""The worker process: the long-running services that advance instances.

Each service is an async callable that runs until the shared ``stop`` event is set and
then returns after finishing its current batch. The worker stops them all on SIGTERM or
SIGINT, within a bound.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from engine.observability import configure_sentry, get_logger
from engine.settings import Settings
from engine.store.database import create_engine

log = get_logger("conveyor.worker")

Service = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
SHUTDOWN_GRACE_SECONDS = 20.0


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    install_signals: bool = True,
) -> int:
    """Run the worker's services until ``stop`` is set (or a signal arrives)."""
    configure_sentry(settings, component="worker")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    db = create_engine(settings)
    services: list[tuple[str, Service]] = []
    log.info("worker started", services=[name for name, _ in services])
    try:
        tasks = [asyncio.create_task(svc(stop), name=name) for name, svc in services]
        await stop.wait()
        log.info("worker stopping")
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS)
            for task in pending:
                log.warning("service did not stop in time; cancelling", service=task.get_name())
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await db.dispose()
        log.info("worker stopped")
    return 0
