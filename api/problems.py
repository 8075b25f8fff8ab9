"""RFC 9457 problem+json answers for every error the API returns."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import orjson
from sanic import HTTPResponse, Request
from sanic.exceptions import SanicException
from sanic.handlers import ErrorHandler

from engine.errors import ConveyorError, DependencyUnavailable
from engine.observability import get_logger
from engine.transient import is_database_unavailable

PROBLEM_JSON = "application/problem+json"
log = get_logger("conveyor.api")
GENERIC_DETAIL = "An unexpected error occurred; quote the request id when reporting it."
# The client closed the connection before the answer (nginx's code for it): nobody reads
# the response; the status shows in the request metrics.
CLIENT_CLOSED = 499
UNAVAILABLE_DETAIL = "A service Conveyor depends on is unavailable right now; retry shortly."
RETRY_AFTER_SECONDS = "2"
# Problem types of Conveyor's own (identifiers, relative to the API; not pages to fetch).
PROBLEM_TYPE_BASE = "/problems/"


def problem_type(name: str) -> str:
    """The problem ``type`` URI of Conveyor's problem ``name``, e.g. ``/problems/orphaned``."""
    return f"{PROBLEM_TYPE_BASE}{name}"


def problem(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> HTTPResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extensions.items() if v is not None})
    return HTTPResponse(
        orjson.dumps(body), status=status, headers=headers, content_type=PROBLEM_JSON
    )


class ProblemErrorHandler(ErrorHandler):
    """Turns every exception into problem+json; never leaks a stack trace or internals."""

    def default(self, request: Request, exception: BaseException) -> HTTPResponse:
        path = request.path if request else None
        request_id = getattr(request.ctx, "request_id", None) if request else None
        if isinstance(exception, DependencyUnavailable) or is_database_unavailable(exception):
            # PostgreSQL restarts, fails over or is out of connections: the client should
            # retry (the pool reconnects by itself). No traceback: this is not a bug.
            log.warning(
                "request failed: dependency unavailable",
                path=path,
                error=f"{type(exception).__name__}: {exception}",
            )
            return problem(
                503,
                "Service Unavailable",
                UNAVAILABLE_DETAIL,
                instance=path,
                headers={"Retry-After": RETRY_AFTER_SECONDS},
                request_id=request_id,
            )
        if isinstance(exception, ConveyorError):
            if exception.status_code >= 500:
                # The message may name internals (SQL, hosts, states): log it, answer plainly.
                log.error("request failed", error=str(exception), exc_info=exception)
                return problem(
                    exception.status_code,
                    exception.title,
                    GENERIC_DETAIL,
                    instance=path,
                    request_id=request_id,
                )
            return problem(
                exception.status_code,
                exception.title,
                str(exception) or None,
                type_=exception.problem_type,
                instance=path,
                headers=getattr(exception, "headers", None),
                request_id=request_id,
                **getattr(exception, "extensions", {}),
            )
        if isinstance(exception, SanicException):
            status = int(exception.status_code)
            if status >= 500:
                log.error("request failed", exc_info=exception)
                return problem(status, instance=path, request_id=request_id)
            return problem(
                status,
                detail=str(exception) or None,
                instance=path,
                headers=dict(getattr(exception, "headers", None) or {}) or None,
                request_id=request_id,
            )
        if isinstance(exception, asyncio.CancelledError):  # sanic's RequestCancelled
            # The client went away mid-request: no bug, and whatever the request queued
            # (a group commit, say) still completes.
            log.info("client closed the connection before the response", path=path)
            return problem(
                CLIENT_CLOSED, "Client Closed Request", instance=path, request_id=request_id
            )
        # Unexpected: report it (Sentry's Sanic integration sees it), answer a bare 500.
        log.error("unhandled error", exc_info=exception)
        return problem(500, detail=GENERIC_DETAIL, instance=path, request_id=request_id)
