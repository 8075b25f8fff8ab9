"""The worker process: the long-running services that advance instances.

Services: the Kafka event consumer (:mod:`engine.messaging.consumer`), the outbox relay
(:mod:`engine.messaging.relay`), the scheduler (due timers, :mod:`engine.scheduler`, bulk
jobs, :mod:`engine.bulk_runner`, and schedules, :mod:`engine.schedule_runner`), retention
(:mod:`engine.store.retention`, hourly) and a metrics reporter. Each is an async callable
that runs until the shared ``stop`` event is set and then returns after finishing its
current batch. The worker stops them all on SIGTERM or SIGINT, within a bound; if one
service dies, the worker stops the others and exits non-zero, so that its supervisor
restarts it.

Its services share one :class:`~engine.liveness.DatabaseOutage`: when PostgreSQL has been
unreachable for longer than ``database_outage_seconds`` the consumer leaves its group and
the relay its leadership (each comes back once the database answers), and the optional
``/health`` endpoint (``worker_health_port``) answers 503 meanwhile. The same port serves
``/metrics`` (Prometheus): what this worker counted, and the database's gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from functools import partial
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from engine.bulk_runner import JobRunner
from engine.exposition import process_registry, render
from engine.gauges import DatabaseGauges
from engine.gc_tuning import tune_gc
from engine.liveness import DatabaseOutage, HealthServer
from engine.messaging.consumer import ConsumerOptions, EventConsumer
from engine.messaging.metrics import WorkerCollector, WorkerMetrics
from engine.messaging.relay import OutboxRelay
from engine.messaging.routing import Router
from engine.observability import configure_sentry, get_logger
from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.schedule_runner import ScheduleRunner
from engine.scheduler import TimerScheduler
from engine.settings import Settings
from engine.store.database import create_engine
from engine.store.retention import run_retention

log = get_logger("conveyor.worker")

Service = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
SHUTDOWN_GRACE_SECONDS = 20.0
METRICS_INTERVAL_SECONDS = 30.0
INPUT_PARTITIONS = 6
TOPIC_SETUP_TIMEOUT_SECONDS = 10.0


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    install_signals: bool = True,
    metrics: WorkerMetrics | None = None,
    consumer_options: ConsumerOptions | None = None,
) -> int:
    """Run the worker's services until ``stop`` is set (or a signal arrives).

    Returns 0 after a requested stop, 1 when a service failed.
    """
    configure_sentry(settings, component="worker")
    stop = stop or asyncio.Event()
    metrics = metrics or WorkerMetrics()
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    registry = load_workflows(settings.workflow_modules)
    router = Router(registry, settings.topic_prefix)
    names = router.names
    await ensure_topics(
        settings,
        [*router.topics, names.deadletter, names.events, names.commands, names.instances],
    )
    db = create_engine(settings)
    runtime = Runtime(db, registry, topic_prefix=settings.topic_prefix)
    outage = DatabaseOutage(settings.database_outage_seconds)
    options = consumer_options or ConsumerOptions(
        max_batch=settings.worker_batch_size, lanes=settings.worker_lanes
    )
    consumer = EventConsumer(settings, runtime, router, metrics, options=options, outage=outage)
    relay = OutboxRelay(db, settings, metrics=metrics, outage=outage)
    scheduler = TimerScheduler(runtime, outage=outage)
    jobs = JobRunner(runtime, outage=outage)
    schedules = ScheduleRunner(runtime, outage=outage, metrics=metrics)

    async def timers_and_jobs(stop: asyncio.Event) -> None:
        # All poll PostgreSQL and share their work with other workers (SKIP LOCKED);
        # the schedule runner syncs the declared schedules first.
        await asyncio.gather(scheduler.run(stop), jobs.run(stop), schedules.run(stop))

    async def report(stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), METRICS_INTERVAL_SECONDS)
            log.info("worker metrics", **metrics.snapshot())

    available: list[tuple[str, Service]] = [
        ("consumer", consumer.run),
        ("relay", relay.run),
        ("scheduler", timers_and_jobs),
        (
            "retention",
            partial(
                run_retention,
                db,
                inbox_retention=timedelta(days=settings.inbox_retention_days),
                outbox_retention=timedelta(hours=settings.outbox_retention_hours),
                history_retention=(
                    timedelta(days=settings.history_retention_days)
                    if settings.history_retention_days is not None
                    else None
                ),
            ),
        ),
    ]
    chosen = set(settings.worker_services)
    services: list[tuple[str, Service]] = [(n, svc) for n, svc in available if n in chosen]
    services.append(("metrics", report))
    tune_gc()
    health: HealthServer | None = None
    if settings.worker_health_port is not None:
        gauges = DatabaseGauges(now=runtime.clock)
        health = HealthServer(
            settings.worker_health_host,
            settings.worker_health_port,
            partial(health_report, outage, metrics, [name for name, _ in services]),
            metrics=partial(render, process_registry(WorkerCollector(metrics), gauges), gauges, db),
        )
        await health.start()
    log.info("worker started", services=[name for name, _ in services], topics=router.topics)
    status = 0
    try:
        tasks = [asyncio.create_task(svc(stop), name=name) for name, svc in services]
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopping:
                status = 1
                error = task.exception() if not task.cancelled() else None
                log.error(
                    "service stopped unexpectedly; stopping the worker",
                    service=task.get_name(),
                    error=repr(error),
                    exc_info=error,
                )
        stop.set()
        await stopping
        log.info("worker stopping")
        _done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS)
        for task in pending:
            log.warning("service did not stop in time; cancelling", service=task.get_name())
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None and task not in done:
                status = 1
                log.error(
                    "service failed while stopping",
                    service=task.get_name(),
                    exc_info=task.exception(),
                )
    finally:
        if health is not None:
            await health.close()
        await db.dispose()
        log.info("worker stopped", **metrics.snapshot())
    return status


def health_report(
    outage: DatabaseOutage, metrics: WorkerMetrics, services: Sequence[str]
) -> tuple[bool, dict[str, Any]]:
    """Healthy unless the database has been away too long or the consumer is stuck."""
    problems = []
    if outage.exceeded:
        problems.append("database unreachable for longer than database_outage_seconds")
    if "consumer" in services and metrics.stalled:
        problems.append("consumer is not making progress")
    snapshot = metrics.snapshot()
    return not problems, {
        "problems": problems,
        "services": list(services),
        "database": outage.snapshot(),
        "consumer": {
            key: snapshot[key]
            for key in ("consumer_in_group", "assigned_partitions", "lag", "stalled")
        },
        "relay": {"leader": metrics.relay_leader},
    }


async def ensure_topics(
    settings: Settings, topics: Sequence[str], *, partitions: int = INPUT_PARTITIONS
) -> None:
    """Create the topics the worker reads or writes when missing (best effort, bounded).

    Existing topics are left alone. New ones get ``partitions`` partitions (the most
    workers that can share them) and up to 3 replicas, as many as there are brokers.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_servers(), client_id="conveyor-worker-admin"
    )
    try:
        async with asyncio.timeout(TOPIC_SETUP_TIMEOUT_SECONDS):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in dict.fromkeys(topics) if t not in existing]
            if missing:
                cluster = await admin.describe_cluster()
                replicas = max(1, min(3, len(cluster["brokers"])))
                await admin.create_topics(
                    [NewTopic(t, partitions, replicas) for t in missing]
                )  # "already exists" (a concurrent worker) is reported, not raised: fine
                log.info("topics created", topics=missing, partitions=partitions)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("could not check or create topics", error=f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await admin.close()
