"""Typed access to what the app's listeners build, and small response helpers."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sanic import HTTPResponse, Request

from api.metrics import Metrics
from engine.decide import FieldError
from engine.errors import PayloadInvalid
from engine.runtime import Runtime

JSON = "application/json"
INT64 = 2**63


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
    problem = _first_unstorable(value, path)
    if problem is not None:
        where, message = problem
        raise PayloadInvalid("the request body is invalid", [FieldError(where, message)])


def _first_unstorable(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, str):
        return (path, "strings must not contain NUL (\\u0000)") if "\x00" in value else None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return (path, "numbers must be finite: this one is NaN, Infinity or beyond a 64-bit float")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if -INT64 <= value < INT64 else (path, "integers must fit in 64 bits")
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return (path, "keys must not contain NUL (\\u0000)")
            found = _first_unstorable(item, f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_unstorable(item, f"{path}.{index}")
            if found is not None:
                return found
    return None
