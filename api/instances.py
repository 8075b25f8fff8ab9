"""``/v1/instances``: read, list, send events, history, cancel and retry (operator)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sanic import Blueprint, HTTPResponse, Request

from api.context import check_storable, json_response, metrics_of, runtime_of, timed
from api.idempotency import HEADER as IDEMPOTENCY_HEADER
from api.problems import problem_type
from api.schemas import (
    CancelInstance,
    HistoryQuery,
    InstanceQuery,
    MoveInstance,
    NoQuery,
    SendEvent,
)
from api.tracing import request_id_of, tag_request
from api.validation import header_text, parse_body, parse_query, parse_uuid, prefixed_query
from engine import data_filters, operations
from engine.decide import Rejection
from engine.errors import ConveyorError, InstanceNotFound, InvalidRequest
from engine.model import Event, Outcome
from engine.retries import RETRY_TIMER
from engine.store import queries, timers
from engine.store.queries import InstanceFilter

bp = Blueprint("instances", url_prefix="/v1/instances")

# Outcomes answered 202: the event is kept and will be (re)applied later, not now.
ACCEPTED_NOT_APPLIED = frozenset({"failed", "retrying", "parked"})

# How each rejection reason answers: 409 for "not now", 422 for "never like this".
REJECTION_STATUS = {
    "not_allowed": 409,
    "guard_refused": 409,
    "finished": 409,
    "inactive": 409,
    "invalid_payload": 422,
    "unknown_event": 422,
    "orphaned": 409,
}


class EventRejected(ConveyorError):
    """The state machine refused the event; the problem says why and what is allowed."""

    title = "Event rejected"

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.status_code = REJECTION_STATUS.get(rejection.reason, 409)
        if rejection.reason == "orphaned":
            # Its workflow, version or state is not loaded here (see `conveyor check`).
            self.title = "Instance orphaned"
            self.problem_type = problem_type("orphaned")
        self.extensions: dict[str, Any] = {
            "reason": rejection.reason,
            "event_id": rejection.event_id,
            "event_type": rejection.event_type,
            "state": rejection.state,
            "allowed_events": list(rejection.allowed_events),
            "missing": rejection.missing,
            "errors": [
                {"path": f"payload.{f.path}" if f.path else "payload", "message": f.message}
                for f in rejection.field_errors
            ]
            or None,
        }


class DuplicateRejected(ConveyorError):
    """A retried event id whose first delivery was rejected: answered the same way again."""

    status_code = 409
    title = "Event rejected"


@bp.get("/", ctx_scope="read")
async def list_instances(request: Request) -> HTTPResponse:
    """Instances matching the filters, newest first (longest in their state first with
    ``sla_breached=true`` or ``in_state_longer_than``); ``next_cursor`` pages on."""
    query, filters = instance_filter(request)
    runtime = runtime_of(request)
    page = await runtime.list_instances(filters, limit=query.limit, cursor=query.cursor)
    return json_response(
        {"items": [runtime.instance_json(i) for i in page.items], "next_cursor": page.next_cursor}
    )


def instance_filter(request: Request) -> tuple[InstanceQuery, InstanceFilter]:
    """The instance filters of the query string (also what bulk actions select by): the
    named parameters, and ``data.<field>=value`` filters on fields the workflow's data
    schema declares (which need ``workflow``). 400 naming any unknown or bad parameter."""
    query = parse_query(request, InstanceQuery, prefix=data_filters.PREFIX)
    data_raw = prefixed_query(request, data_filters.PREFIX)
    data = None
    if data_raw:
        if query.workflow is None:
            names = ", ".join(sorted(data_raw))
            raise InvalidRequest(f"invalid query parameters: {names} need workflow=<name>")
        schema = runtime_of(request).registry.get(query.workflow, query.version).data_schema
        data = data_filters.data_filter(schema, data_raw)
    return query, InstanceFilter(
        workflow=query.workflow,
        version=query.version,
        state=query.state,
        status=query.status,
        business_key_prefix=query.business_key_prefix,
        created_after=_aware(query.created_after),
        created_before=_aware(query.created_before),
        updated_after=_aware(query.updated_after),
        updated_before=_aware(query.updated_before),
        data=data,
        in_state_longer_than=query.in_state_longer_than,
        sla_breached=query.sla_breached,
    )


@bp.get("/<instance_id:str>", ctx_scope="read")
async def get_instance(request: Request, instance_id: str) -> HTTPResponse:
    """One instance: state, status, data, revision, timestamps, error if failed."""
    if request.query_string:  # none is the common case: no model to validate
        parse_query(request, NoQuery)
    runtime = runtime_of(request)
    instance = await runtime.get(parse_uuid(instance_id))
    return json_response(runtime.instance_json(instance))


@bp.get("/<instance_id:str>/timers", ctx_scope="read")
async def get_timers(request: Request, instance_id: str) -> HTTPResponse:
    """The instance's pending timers, soonest first: the workflow's own and, while it is
    retrying, ``conveyor.retry``."""
    target = parse_uuid(instance_id)
    parse_query(request, NoQuery)
    runtime = runtime_of(request)
    pending = await timers.pending(runtime.db, target)
    if pending is None:
        raise InstanceNotFound(f"no instance {target}")
    now = runtime.clock()
    return json_response(
        {
            "items": [
                {
                    "name": t.name,
                    "state": t.state,
                    "due_at": t.due_at.isoformat(),
                    "overdue_seconds": max((now - t.due_at).total_seconds(), 0.0),
                    "kind": "retry" if t.name == RETRY_TIMER else "timer",
                }
                for t in pending
            ]
        }
    )


@bp.post("/<instance_id:str>/events", ctx_scope="write")
async def send_event(request: Request, instance_id: str) -> HTTPResponse:
    """Apply an event now. 200 applied or duplicate; 202 accepted but not applied yet: the
    workflow's action failed and will be retried by a timer (``retrying``), or the
    instance is retrying an earlier step and the event waits behind it (``parked``), or
    the last attempt failed the instance (``failed``, applied again by an operator's
    retry); 409 when not allowed in the current state; 422 when the payload fails its
    schema. Event ids are
    unique per instance (see ``_first_delivery``)."""
    target = parse_uuid(instance_id)
    body = parse_body(request, SendEvent)
    check_storable(body.payload, "payload")
    header_id = request.headers.get(IDEMPOTENCY_HEADER)
    if header_id is not None and (not header_id or len(header_id) > 200 or "\x00" in header_id):
        raise InvalidRequest(f"{IDEMPOTENCY_HEADER} must be 1 to 200 characters")
    if header_id is not None:
        header_id = header_text(header_id, IDEMPOTENCY_HEADER)
    if body.id is not None and header_id is not None and body.id != header_id:
        raise InvalidRequest(f"the body's id and the {IDEMPOTENCY_HEADER} header differ")
    event_id = body.id or header_id or uuid.uuid4().hex
    tag_request(request, instance=str(target))
    runtime = runtime_of(request)
    event = Event(
        type=body.type,
        event_id=event_id,
        payload=body.payload,
        instance_id=target,
        source="http",
        request_id=request_id_of(request),
    )
    # Timed and tagged by hand rather than by `timed` and `_workflow_tagged_on_failure`:
    # two async context managers cost more than the rest of this handler.
    started = time.perf_counter()
    try:
        outcome = await runtime.send(event)
    except Exception as exc:
        await _tag_workflow_on_failure(request, target, exc)
        raise
    finally:
        metrics_of(request).commit_latency.observe(time.perf_counter() - started, "event")
    if outcome.status == "not_found":
        raise InstanceNotFound(f"no instance {target}")
    # An applied or rejected event comes with the instance as it left it: no second read.
    instance = outcome.instance or await runtime.get(target)
    tag_request(request, workflow=instance.workflow)
    metrics = metrics_of(request)
    metrics.transitions.inc(instance.workflow, outcome.status, version=instance.version)
    if outcome.status == "rejected" and outcome.rejection is not None:
        metrics.rejections.inc(instance.workflow, outcome.rejection.reason)
        raise EventRejected(outcome.rejection)
    original = None
    if outcome.status == "duplicate":
        outcome, original = await _first_delivery(request, target, outcome)
    status = 202 if outcome.status in ACCEPTED_NOT_APPLIED else 200
    return json_response(
        {"outcome": _outcome_json(outcome, original), "instance": runtime.instance_json(instance)},
        status,
    )


@bp.get("/<instance_id:str>/history", ctx_scope="read")
async def get_history(request: Request, instance_id: str) -> HTTPResponse:
    """The instance's history in order; ``cursor`` is the last id seen."""
    target = parse_uuid(instance_id)
    query = parse_query(request, HistoryQuery)
    records = await runtime_of(request).history(target, after=query.cursor, limit=query.limit + 1)
    more = len(records) > query.limit
    records = records[: query.limit]
    return json_response(
        {
            "items": [r.to_json() for r in records],
            "next_cursor": str(records[-1].id) if more else None,
        }
    )


@bp.post("/<instance_id:str>/cancel", ctx_scope="admin")
async def cancel_instance(request: Request, instance_id: str) -> HTTPResponse:
    """Operator: cancel an active, retrying or failed instance. The workflow's cancel route
    runs where one applies (``mode: transition``, with its compensating actions); else only
    the status changes (``mode: status``); ``already`` when it was cancelled. Idempotent."""
    target = parse_uuid(instance_id)
    body = parse_body(request, CancelInstance, optional=True)
    tag_request(request, instance=str(target))
    runtime = runtime_of(request)
    async with timed(request, "cancel"), _workflow_tagged_on_failure(request, target):
        cancelled = await operations.cancel(
            runtime,
            target,
            reason=body.reason,
            request_id=request_id_of(request),
            status_only=body.status_only,
        )
    instance = cancelled.instance
    if cancelled.mode != "already":
        metrics_of(request).transitions.inc(
            instance.workflow, "cancelled", version=instance.version
        )
    return json_response(
        {
            "mode": cancelled.mode,
            "transition": cancelled.transition,
            "instance": runtime.instance_json(instance),
        }
    )


@bp.post("/<instance_id:str>/move", ctx_scope="admin")
async def move_instance(request: Request, instance_id: str) -> HTTPResponse:
    """Operator: put an active, retrying or failed instance into another state its version
    declares (no actions run, hooks only with ``run_hooks``; its timers become the new
    state's); 422 for an undeclared state, 409 for an ended instance or a hook that
    raised."""
    target = parse_uuid(instance_id)
    body = parse_body(request, MoveInstance)
    tag_request(request, instance=str(target))
    runtime = runtime_of(request)
    async with timed(request, "move"), _workflow_tagged_on_failure(request, target):
        instance = await operations.move(
            runtime,
            target,
            state=body.state,
            reason=body.reason,
            run_hooks=body.run_hooks,
            request_id=request_id_of(request),
        )
    metrics_of(request).transitions.inc(instance.workflow, "moved", version=instance.version)
    return json_response(runtime.instance_json(instance))


@bp.post("/<instance_id:str>/retry", ctx_scope="admin")
async def retry_instance(request: Request, instance_id: str) -> HTTPResponse:
    """Operator: re-activate a failed (or hurry a retrying) instance, re-apply the event
    that failed it, then the events parked behind it."""
    target = parse_uuid(instance_id)
    tag_request(request, instance=str(target))
    runtime = runtime_of(request)
    async with timed(request, "retry"), _workflow_tagged_on_failure(request, target):
        outcome = await operations.retry(runtime, target, request_id=request_id_of(request))
    instance = await runtime.get(target)
    metrics_of(request).transitions.inc(
        instance.workflow, f"retry_{outcome.status}", version=instance.version
    )
    status = 202 if outcome.status in ACCEPTED_NOT_APPLIED else 200
    return json_response(
        {"outcome": _outcome_json(outcome, None), "instance": runtime.instance_json(instance)},
        status,
    )


@asynccontextmanager
async def _workflow_tagged_on_failure(request: Request, target: uuid.UUID) -> AsyncIterator[None]:
    """On a server error, name the instance's workflow too (for Sentry), then re-raise."""
    try:
        yield
    except Exception as exc:
        await _tag_workflow_on_failure(request, target, exc)
        raise


async def _tag_workflow_on_failure(request: Request, target: uuid.UUID, exc: Exception) -> None:
    """After ``exc``, if it is a server error, name the instance's workflow (for Sentry)."""
    if not isinstance(exc, ConveyorError) or exc.status_code >= 500:
        # Best effort: the original error is what matters and is re-raised by the caller.
        with contextlib.suppress(Exception):
            instance = await runtime_of(request).get(target)
            tag_request(request, workflow=instance.workflow)


async def _first_delivery(
    request: Request, target: uuid.UUID, outcome: Outcome
) -> tuple[Outcome, str]:
    """What the first delivery of a duplicate event id did, from the inbox and history.

    Event ids are unique per instance: the inbox is keyed by (instance id, event id), so a
    duplicate is the same id sent again to the same instance, and the same id sent to
    another instance is another event (it never conflicts with this one).
    """
    row = await queries.first_delivery(request.app.ctx.db, target, outcome.event_id)
    if row is None:  # the inbox row was cleaned up; nothing more to tell
        return outcome, "unknown"
    if row["outcome"] == "rejected":
        raise DuplicateRejected(f"event {outcome.event_id!r} was rejected before: {row['reason']}")
    first = Outcome(
        outcome.event_id,
        "duplicate",
        target,
        row["from_state"],
        row["to_state"],
        row["revision"],
        error=row["reason"],
    )
    return first, str(row["outcome"])


def _outcome_json(outcome: Outcome, original: str | None) -> dict[str, Any]:
    return {
        "event_id": outcome.event_id,
        "status": outcome.status,
        "original_status": original,
        "from_state": outcome.from_state,
        "to_state": outcome.to_state,
        "revision": outcome.revision,
        "error": outcome.error,
    }


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
