"""Request ids and per-request context for logs and Sentry.

Every request gets an id: the client's ``X-Request-ID`` when it is a sane token, else a
new one. It is returned in the response, bound to every log line logged while the
request runs (the log context) and passed to the runtime, which stores it in the
history and in the Kafka headers of what the request caused (through the outbox).
"""

from __future__ import annotations

import itertools
import os
import re
import time

import sentry_sdk
from sanic import Request
from sanic.response import BaseHTTPResponse

from engine.observability import begin_log_context, bind_log_context, get_logger

REQUEST_ID_HEADER = "X-Request-ID"
access_log = get_logger("conveyor.access")
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

# Ids we make: 64 random bits per process, then a counter. Unique across processes and
# restarts for all practical purposes, and far cheaper than a random UUID per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def request_id_of(request: Request) -> str:
    request_id: str = request.ctx.request_id
    return request_id


def begin_request(request: Request) -> None:
    """Request middleware: start the clock, pick the request id, bind it for logging."""
    request.ctx.started = time.perf_counter()
    given = request.headers.get(REQUEST_ID_HEADER)
    request_id = given if given and _SANE_ID.fullmatch(given) else new_request_id()
    request.ctx.request_id = request_id
    # Requests on one keep-alive connection share a task: each starts a fresh context.
    begin_log_context(request_id=request_id)
    if request.app.ctx.sentry_on:
        sentry_sdk.set_tag("request_id", request_id)


def end_request(request: Request, response: BaseHTTPResponse) -> None:
    """Response middleware: return the request id (on errors too)."""
    request_id = getattr(request.ctx, "request_id", None)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


def log_access(request: Request, response: BaseHTTPResponse) -> None:
    """Response middleware (only when ``access_log`` is on): one line per request.

    The path is logged without its query string. The log context adds the workflow and
    instance the request was about, when it named them.
    """
    started = getattr(request.ctx, "started", None)
    access_log.info(
        "request",
        method=request.method,
        path=request.path,
        status=response.status,
        duration_ms=None if started is None else round((time.perf_counter() - started) * 1e3, 3),
        request_id=getattr(request.ctx, "request_id", None),
    )


def tag_request(
    request: Request, *, workflow: str | None = None, instance: str | None = None
) -> None:
    """Name the workflow and instance a request is about, in logs and in Sentry events."""
    if workflow:
        bind_log_context(workflow=workflow)
    if instance:
        bind_log_context(instance_id=instance)
    if request.app.ctx.sentry_on:
        if workflow:
            sentry_sdk.set_tag("workflow", workflow)
        if instance:
            sentry_sdk.set_tag("instance", instance)
