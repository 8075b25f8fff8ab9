"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from sanic import Blueprint, HTTPResponse, Request, json

from api.problems import problem
from engine.errors import DependencyUnavailable
from engine.store.database import ping

bp = Blueprint("health")


@bp.get("/health", ctx_public=True)
async def health(request: Request) -> HTTPResponse:
    """The process is alive and its event loop answers."""
    return json({"status": "ok"})


@bp.get("/ready", ctx_public=True)
async def ready(request: Request) -> HTTPResponse:
    """Real checks of PostgreSQL and Kafka, run concurrently with a bounded wait each."""
    ctx = request.app.ctx
    timeout = ctx.settings.ready_timeout_seconds
    results = await asyncio.gather(
        ping(ctx.db, timeout), ctx.kafka_probe.check(timeout), return_exceptions=True
    )
    checks: dict[str, dict[str, str]] = {}
    down: list[str] = []
    for name, result in zip(("postgresql", "kafka"), results, strict=True):
        if isinstance(result, BaseException):
            reason = str(result) if isinstance(result, DependencyUnavailable) else repr(result)
            checks[name] = {"status": "down", "reason": reason}
            down.append(name)
        else:
            checks[name] = {"status": "up"}
    if down:
        return problem(
            503,
            "Not ready",
            f"unavailable: {', '.join(down)}",
            instance=request.path,
            checks=checks,
        )
    return json({"status": "ready", "checks": checks})
