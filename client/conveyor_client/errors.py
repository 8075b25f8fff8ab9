"""Typed exceptions built from Conveyor's RFC 9457 problem+json answers.

Every error answer of the API becomes a :class:`ConveyorError` subclass chosen by its
status, then (where the API says more) by the problem's ``type`` URI or its ``reason``
member. A body that is not problem+json (a proxy's HTML page, say) still gives the class
of its status, with the text as ``detail``. Connection failures that outlast the retries
raise :class:`TransportError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
ORPHANED_TYPE = "/problems/orphaned"
"""The problem ``type`` of an instance whose workflow, version or state is not loaded."""
_STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})
_MAX_TEXT_DETAIL = 500


@dataclass(frozen=True, slots=True)
class FieldError:
    """One field a 422 (or 400) names: ``path`` like ``data.total`` or ``payload.amount``."""

    path: str
    message: str


class ConveyorError(Exception):
    """An error answer of the API (status 4xx or 5xx), as a problem.

    ``extra`` holds the problem's members beyond the standard five (``errors``,
    ``allowed_events``, ``reason``, ``state``, ...); ``request_id`` is the answer's
    ``X-Request-ID`` (quote it when reporting a problem).
    """

    status: int
    type: str
    title: str
    detail: str | None
    instance: str | None
    extra: Mapping[str, Any]
    request_id: str | None
    retry_after: float | None

    def __init__(
        self,
        status: int,
        *,
        type: str = "about:blank",
        title: str = "",
        detail: str | None = None,
        instance: str | None = None,
        extra: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.instance = instance
        self.extra = dict(extra or {})
        self.request_id = request_id
        self.retry_after = retry_after
        text = f"{status} {title}" if title else str(status)
        super().__init__(f"{text}: {detail}" if detail else text)

    @property
    def errors(self) -> tuple[FieldError, ...]:
        """The field errors the problem names (422 and some 400 answers), else ``()``."""
        found = self.extra.get("errors")
        if not isinstance(found, list):
            return ()
        return tuple(
            FieldError(str(e.get("path", "")), str(e.get("message", "")))
            for e in found
            if isinstance(e, Mapping)
        )

    @property
    def allowed_events(self) -> tuple[str, ...]:
        """For a refused event: the event types the instance accepts in its state."""
        found = self.extra.get("allowed_events")
        return tuple(str(e) for e in found) if isinstance(found, list) else ()

    @property
    def reason(self) -> str | None:
        """For a refused event: why (``not_allowed``, ``guard_refused``, ``finished``, ...)."""
        found = self.extra.get("reason")
        return found if isinstance(found, str) else None

    @property
    def state(self) -> str | None:
        """For a refused event: the state the instance is in."""
        found = self.extra.get("state")
        return found if isinstance(found, str) else None


class BadRequest(ConveyorError):
    """400: a malformed request (an unknown or bad query parameter, a bad id, ...)."""


class Unauthorized(ConveyorError):
    """401: no API key, or one unknown or revoked."""


class Forbidden(ConveyorError):
    """403: the API key lacks the scope (read, write, admin) the call needs."""


class NotFound(ConveyorError):
    """404: no such workflow, instance, dead letter or job."""


class Conflict(ConveyorError):
    """409: the call does not apply now (the instance's status or state)."""


class EventRejected(Conflict):
    """409: the instance refused the event; :attr:`reason` says why, and
    :attr:`allowed_events` what it accepts in :attr:`state`."""


class EventNotAllowed(EventRejected):
    """409: the event is not one the instance's state accepts (``reason`` not_allowed)."""


class GuardRefused(EventRejected):
    """409: the transition's guard said no (``reason`` guard_refused)."""


class InstanceEnded(EventRejected):
    """409: the instance is finished or not active (``reason`` finished or inactive)."""


class Orphaned(Conflict):
    """409: the instance's workflow, version or state is not loaded in this API
    (problem type ``/problems/orphaned``; see ``conveyor check``)."""


class IdempotencyKeyInUse(Conflict):
    """409: another request with the same Idempotency-Key is still running; retry after
    :attr:`retry_after` seconds."""


class ValidationFailed(ConveyorError):
    """422: data or a payload failed its schema (:attr:`errors` names each field), or an
    Idempotency-Key was reused with a different request."""


class Unavailable(ConveyorError):
    """503: PostgreSQL (or another dependency) is unreachable right now; retry shortly."""


class ServerError(ConveyorError):
    """Any other 5xx answer."""


class TransportError(Exception):
    """No answer: the connection failed or timed out on every attempt."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


_BY_STATUS: dict[int, type[ConveyorError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: ValidationFailed,
    503: Unavailable,
}
_BY_REASON: dict[str, type[ConveyorError]] = {
    "not_allowed": EventNotAllowed,
    "guard_refused": GuardRefused,
    "finished": InstanceEnded,
    "inactive": InstanceEnded,
}


def error_class(status: int, problem: Mapping[str, Any]) -> type[ConveyorError]:
    """The exception class of an answer with ``status`` and problem body ``problem``."""
    if status == 409:
        if problem.get("type") == ORPHANED_TYPE:
            return Orphaned
        reason = problem.get("reason")
        if isinstance(reason, str):
            return _BY_REASON.get(reason, EventRejected)
        if problem.get("title") == "Idempotency key in use":
            return IdempotencyKeyInUse
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ConveyorError


def from_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> ConveyorError:
    """The typed error of an error answer: its problem+json if it is one, else a problem
    made from the status and the body's text."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    problem: dict[str, Any] = {}
    try:
        parsed = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if isinstance(parsed, dict):
        problem = parsed
    else:
        text = body.decode("utf-8", errors="replace").strip()
        if text:
            problem["detail"] = text[:_MAX_TEXT_DETAIL]
    request_id = headers.get(REQUEST_ID_HEADER.lower()) or _text(problem.get("request_id"))
    cls = error_class(status, problem)
    return cls(
        status,
        type=_text(problem.get("type")) or "about:blank",
        title=_text(problem.get("title")) or _phrase(status),
        detail=_text(problem.get("detail")),
        instance=_text(problem.get("instance")),
        extra={k: v for k, v in problem.items() if k not in _STANDARD_MEMBERS},
        request_id=request_id,
        retry_after=_seconds(headers.get("retry-after")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: not worth parsing here
    return seconds if seconds >= 0 else None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


__all__ = [
    "BadRequest",
    "Conflict",
    "ConveyorError",
    "EventNotAllowed",
    "EventRejected",
    "FieldError",
    "Forbidden",
    "GuardRefused",
    "IdempotencyKeyInUse",
    "InstanceEnded",
    "NotFound",
    "Orphaned",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
    "error_class",
    "from_response",
]
