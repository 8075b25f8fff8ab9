"""The Sanic application factory.

Listeners open and close the process's resources (database engine, Kafka readiness probe,
the in-process worker of ``conveyor dev``); nothing is built at import time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import orjson
from sanic import Request, Sanic
from sanic.config import Config
from sanic.response import BaseHTTPResponse

from api import openapi
from api.auth import KeyCache, authenticate
from api.bulk import bp as bulk_bp
from api.console.assets import assets_bp
from api.console.routes import bp as console_bp
from api.dead_letters import bp as dead_letters_bp
from api.health import bp as health_bp
from api.instances import bp as instances_bp
from api.metrics import Metrics, record_request
from api.metrics import bp as metrics_bp
from api.migrations import bp as migrations_bp
from api.problems import ProblemErrorHandler
from api.schedules import bp as schedules_bp
from api.stats import bp as stats_bp
from api.tracing import begin_request, end_request, log_access
from api.workflows import bp as workflows_bp
from engine.errors import ConveyorError
from engine.gc_tuning import tune_gc
from engine.messaging.clients import KafkaProbe
from engine.messaging.metrics import WorkerMetrics
from engine.observability import configure_logging, configure_sentry
from engine.registry import load_workflows
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.database import create_engine
from engine.worker import run_worker


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def create_app(
    settings: Settings | None = None, *, with_worker: bool = False, name: str = "conveyor"
) -> Sanic[Config, Any]:
    """Build the HTTP API. ``settings`` defaults to the environment's.

    ``with_worker`` also runs a worker in the same process (``conveyor dev``).
    """
    settings = settings or Settings()
    configure_logging(settings)
    sentry_on = configure_sentry(settings, component="api")
    if sentry_on:
        _ignore_client_errors_in_sentry()
    app: Sanic[Config, Any] = Sanic(
        name, dumps=_dumps, error_handler=ProblemErrorHandler(), configure_logging=False
    )
    app.config.REQUEST_MAX_SIZE = 1_000_000
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.ctx.settings = settings
    app.ctx.sentry_on = sentry_on
    app.ctx.registry = load_workflows(settings.workflow_modules)
    app.ctx.metrics = Metrics()
    app.ctx.key_cache = KeyCache()
    app.blueprint(health_bp)
    app.blueprint(metrics_bp)
    app.blueprint(workflows_bp)
    app.blueprint(instances_bp)
    app.blueprint(dead_letters_bp)
    app.blueprint(bulk_bp)
    app.blueprint(migrations_bp)
    app.blueprint(schedules_bp)
    app.blueprint(stats_bp)
    app.blueprint(console_bp)
    app.blueprint(assets_bp)
    # One middleware each way (each costs a dispatch on every request). Order matters: the
    # request id first (so that a 401 carries it), then the key. The access log is chosen
    # here, once: when it is off, requests pay nothing for it.
    app.register_middleware(_on_request, "request")
    app.register_middleware(
        _on_response_logged if settings.access_log else _on_response, "response"
    )
    openapi.install(app)

    @app.before_server_start
    async def open_resources(app: Sanic[Config, Any]) -> None:
        app.ctx.db = create_engine(settings)
        app.ctx.runtime = Runtime(
            app.ctx.db,
            app.ctx.registry,
            topic_prefix=settings.topic_prefix,
            # One read and one start batch at a time: whatever arrives meanwhile joins the
            # next one, so under load each carries more requests for the same round trips
            # and commit (bench/http_api.py, 32 connections: get +10-30%, start +20-30%
            # against 4 at a time, p99 no worse); sends gain nothing from it.
            read_concurrency=1,
            start_concurrency=1,
            observer=app.ctx.metrics,
        )
        app.ctx.kafka_probe = KafkaProbe(settings)
        app.ctx.worker_task = None
        if with_worker:
            app.ctx.worker_stop = asyncio.Event()
            app.ctx.worker_metrics = WorkerMetrics()  # /metrics shows its counters too
            app.ctx.worker_task = asyncio.create_task(
                run_worker(
                    settings,
                    stop=app.ctx.worker_stop,
                    install_signals=False,
                    metrics=app.ctx.worker_metrics,
                )
            )

    @app.after_server_start
    async def settle(app: Sanic[Config, Any]) -> None:
        tune_gc()

    @app.after_server_stop
    async def close_resources(app: Sanic[Config, Any]) -> None:
        if app.ctx.worker_task is not None:
            app.ctx.worker_stop.set()
            await asyncio.gather(app.ctx.worker_task, return_exceptions=True)
        await app.ctx.kafka_probe.close()
        await app.ctx.key_cache.close()
        await app.ctx.db.dispose()

    return app


def _on_request(request: Request) -> Coroutine[Any, Any, None] | None:
    # Plain functions, not coroutines: Sanic awaits only what returns an awaitable (a key
    # not verified recently), so the common request costs no coroutine here.
    begin_request(request)
    return authenticate(request)


def _on_response(request: Request, response: BaseHTTPResponse) -> None:
    end_request(request, response)
    record_request(request, response)


def _on_response_logged(request: Request, response: BaseHTTPResponse) -> None:
    end_request(request, response)
    record_request(request, response)
    log_access(request, response)


def _ignore_client_errors_in_sentry() -> None:
    """Sentry gets server errors only: a 404 or 409 the API answers on purpose is no bug."""
    import sentry_sdk  # lazy: only with a DSN (sentry-sdk costs ~0.2 s to import)

    def drop_client_errors(event: Any, hint: dict[str, Any]) -> Any:
        exc_info = hint.get("exc_info") if hint else None
        error = exc_info[1] if exc_info else None
        if isinstance(error, ConveyorError) and error.status_code < 500:
            return None
        return event

    sentry_sdk.get_global_scope().add_event_processor(drop_client_errors)
