"""Typed access to what the app's listeners build, and small response helpers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sanic import HTTPResponse, Request

from api.metrics import Metrics
from engine.decide import FieldError
from engine.errors import PayloadInvalid
from engine.input_validation import first_unstorable
from engine.runtime import Runtime

JSON = "application/json"


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.ctx.runtime
    return runtime


def metrics_of(request: Request) -> Metrics:
    metrics: Metrics = request.app.ctx.metrics
    return metrics


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HTTPResponse:
    return HTTPResponse(orjson.dumps(body), status=status, headers=headers, content_type=JSON)


@asynccontextmanager
async def timed(request: Request, operation: str) -> AsyncIterator[None]:
    """Observe how long a runtime call takes (load, decide, persist, commit)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics_of(request).commit_latency.observe(time.perf_counter() - started, operation)


def check_storable(value: Any, path: str) -> None:
    """Refuse JSON values PostgreSQL's jsonb or our encoder cannot hold: strings with NUL
    characters, integers beyond 64 bits, and numbers that are not finite (``1e400``
    overflows a float to infinity; ``NaN`` and ``Infinity`` are not JSON at all, though
    the parser takes them). Raises PayloadInvalid naming the field."""
    problem = first_unstorable(value, path)
    if problem is not None:
        where, message = problem
        raise PayloadInvalid("the request body is invalid", [FieldError(where, message)])
