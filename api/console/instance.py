"""The console's page of one instance: its header, state diagram (the path it took and
where it is), data, history, pending timers and the messages it published; and the
operator's actions on it: send an event (a form generated from the event's payload
schema), cancel, retry and move.

Actions take the same engine paths as the ``/v1`` routes and need the same scopes:
sending an event needs ``write``; cancel, retry and move need ``admin``. After an action
the browser is sent back to the page (303) with ``done`` naming what happened; a refused
event is shown on the page with what was typed kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sanic import HTTPResponse, Request, redirect

from api.console.render import page
from api.console.schema_form import FormField, form_fields, payload_from_form
from api.console.views import bp, signed_in
from api.context import check_storable, metrics_of
from api.instances import REJECTION_STATUS
from api.tracing import request_id_of, tag_request
from engine import operations
from engine.decisions import FieldError
from engine.dsl import CANCEL_EVENT
from engine.errors import ConveyorError, InstanceNotFound, InvalidRequest, PayloadInvalid
from engine.introspect import mermaid
from engine.model import Event, Instance, InstanceStatus
from engine.orphans import missing_definition, orphaned_message
from engine.registry import WorkflowDefinition
from engine.retries import RETRY_TIMER
from engine.store import instance_messages, instance_path, timers

HISTORY_PAGE = 50
MESSAGES_SHOWN = 50
MAX_REASON = 1000
QUERY = frozenset({"after", "done"})

ENDED = (InstanceStatus.COMPLETED, InstanceStatus.CANCELLED)
RETRYABLE = (InstanceStatus.FAILED, InstanceStatus.RETRYING)

DONE = {
    "applied": "The event was applied.",
    "duplicate": "That event was applied before; nothing changed.",
    "retrying": "The event's action failed; the instance is retrying it.",
    "parked": "The instance is retrying an earlier step; the event waits behind it.",
    "failed": "The event's action failed on its last attempt; the instance is failed.",
    "cancelled": "Cancelled through the workflow's cancel route.",
    "cancelled_status": "Cancelled: only the status changed (no cancel route ran).",
    "cancel_already": "It was cancelled already; nothing changed.",
    "retry_applied": "Retried: the step that failed was applied.",
    "retry_retrying": "Retried: the step failed again and will be retried.",
    "retry_failed": "Retried: the step failed again; the instance is failed.",
    "retry_rejected": "Retried: the step that failed was rejected now.",
    "retry_stale": "Retried: the timer that failed had nothing left to do.",
    "retry_duplicate": "Retried: the step that failed was applied before.",
    "moved": "Moved.",
    "sent": "The event was sent.",
    "retried": "Retried.",
}
"""What ``?done=`` may say: fixed texts, so a link cannot put words on the page."""


@dataclass(frozen=True, slots=True)
class EventForm:
    """One event the current state accepts, as a form."""

    type: str
    fields: list[FormField]


@dataclass(frozen=True, slots=True)
class Refusal:
    """What the page says when an action was refused, and what the operator had typed."""

    message: str
    event_type: str | None = None
    field_errors: tuple[FieldError, ...] = ()
    typed: Mapping[str, str] | None = None


def _instance_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InstanceNotFound(f"no instance {text!r}") from None


def _definition(runtime: Any, instance: Instance) -> WorkflowDefinition | None:
    if missing_definition(runtime.registry, instance.workflow, instance.version, instance.state):
        return None
    definition: WorkflowDefinition = runtime.registry.get(instance.workflow, instance.version)
    return definition


def _event_forms(definition: WorkflowDefinition | None, instance: Instance) -> list[EventForm]:
    if definition is None or instance.status in ENDED:
        return []
    spec = definition.spec
    return [
        EventForm(event_type, form_fields(spec.payload_schemas[event_type].model_json_schema()))
        for event_type in sorted(spec.allowed_events[instance.state])
        if event_type != CANCEL_EVENT and event_type in spec.payload_schemas
    ]


def _query(request: Request) -> tuple[int, str | None]:
    unknown = sorted(set(request.args) - QUERY)
    if unknown:
        raise InvalidRequest(f"unknown query parameter(s): {', '.join(unknown)}")
    after_text = request.args.get("after", "0")
    if not after_text.isascii() or not after_text.isdigit() or len(after_text) > 18:
        raise InvalidRequest("after must be a history row id (a whole number)")
    done = request.args.get("done")
    if done is not None and done not in DONE:
        raise InvalidRequest("done names no known result")
    return int(after_text), done


async def _show(
    request: Request,
    instance_id: uuid.UUID,
    *,
    after: int = 0,
    done: str | None = None,
    refusal: Refusal | None = None,
    status: int = 200,
) -> HTTPResponse:
    runtime = request.app.ctx.runtime
    instance = await runtime.get(instance_id)
    definition = _definition(runtime, instance)
    missing = missing_definition(
        runtime.registry, instance.workflow, instance.version, instance.state
    )
    diagram = None
    if definition is not None:
        visited = await instance_path.visited_states(runtime.db, instance_id)
        states = definition.spec.states
        diagram = mermaid(
            definition, highlight=instance.state, visited=[s for s in states if s in visited]
        )
    records = await runtime.history(instance_id, after=after, limit=HISTORY_PAGE + 1)
    more_url = None
    if len(records) > HISTORY_PAGE:
        records = records[:HISTORY_PAGE]
        more_url = f"/ui/instances/{instance_id}?{urlencode({'after': records[-1].id})}#history"
    now = runtime.clock()
    pending = await timers.pending(runtime.db, instance_id) or []
    messages = await instance_messages.recent(runtime.db, instance_id, limit=MESSAGES_SHOWN)
    active = instance.status not in ENDED
    return page(
        request,
        "instance.html",
        status=status,
        active="instances",
        instance=runtime.instance_json(instance),
        orphan_note=None
        if missing is None
        else orphaned_message(instance.workflow, instance.version, instance.state, missing),
        diagram=diagram,
        history=records,
        history_after=after,
        more_url=more_url,
        timers=[
            {
                "name": t.name,
                "state": t.state,
                "due_at": t.due_at,
                "overdue_seconds": max(int((now - t.due_at).total_seconds()), 0),
                "kind": "retry" if t.name == RETRY_TIMER else "timer",
            }
            for t in pending
        ],
        messages=messages,
        messages_shown=MESSAGES_SHOWN,
        event_forms=_event_forms(definition, instance),
        can_cancel=active,
        can_retry=instance.status in RETRYABLE,
        move_states=[s for s in definition.spec.states if s != instance.state]
        if definition is not None and active
        else [],
        done=DONE.get(done) if done else None,
        refusal=refusal,
    )


def _back(instance_id: uuid.UUID, done: str) -> HTTPResponse:
    return redirect(f"/ui/instances/{instance_id}?{urlencode({'done': done})}", status=303)


def _form(request: Request) -> dict[str, str]:
    form: Any = request.form or {}
    return {name: form.get(name) for name in form}


def _reason(form: Mapping[str, str]) -> str:
    reason = form.get("reason", "").strip()
    if len(reason) > MAX_REASON or "\x00" in reason:
        raise InvalidRequest(f"the reason must be at most {MAX_REASON} characters, without NUL")
    return reason


@bp.get("/instances/<instance_id:str>", ctx_public=True)
@signed_in()
async def instance_page(request: Request, instance_id: str) -> HTTPResponse:
    """One instance: what it is, where it has been, and what an operator can do with it."""
    target = _instance_id(instance_id)
    after, done = _query(request)
    return await _show(request, target, after=after, done=done)


@bp.post("/instances/<instance_id:str>/events", ctx_public=True)
@signed_in("write")
async def send_event(request: Request, instance_id: str) -> HTTPResponse:
    """Send the event the form describes, as the operator (``source: operator``)."""
    target = _instance_id(instance_id)
    form = _form(request)
    event_type = form.get("type", "")
    if not event_type or len(event_type) > 200 or "\x00" in event_type:
        raise InvalidRequest("choose an event type")
    runtime = request.app.ctx.runtime
    instance = await runtime.get(target)
    definition = _definition(runtime, instance)
    schema = definition.spec.payload_schemas.get(event_type) if definition is not None else None
    fields = form_fields(schema.model_json_schema()) if schema is not None else []
    payload, errors = payload_from_form(fields, form)
    try:
        if errors:
            raise PayloadInvalid("the form is invalid", errors)
        check_storable(payload, "payload")
    except PayloadInvalid as error:
        refusal = Refusal(str(error), event_type, error.field_errors, form)
        return await _show(request, target, refusal=refusal, status=422)
    tag_request(request, instance=str(target), workflow=instance.workflow)
    outcome = await runtime.send(
        Event(
            type=event_type,
            event_id=f"console:{uuid.uuid4()}",
            payload=payload,
            instance_id=target,
            source="operator",
            request_id=request_id_of(request),
        )
    )
    if outcome.status == "not_found":
        raise InstanceNotFound(f"no instance {target}")
    metrics = metrics_of(request)
    metrics.transitions.inc(instance.workflow, outcome.status, version=instance.version)
    if outcome.status == "rejected" and outcome.rejection is not None:
        rejection = outcome.rejection
        metrics.rejections.inc(instance.workflow, rejection.reason)
        refusal = Refusal(rejection.message, event_type, rejection.field_errors, form)
        return await _show(
            request, target, refusal=refusal, status=REJECTION_STATUS.get(rejection.reason, 409)
        )
    return _back(target, outcome.status if outcome.status in DONE else "sent")


@bp.post("/instances/<instance_id:str>/cancel", ctx_public=True)
@signed_in("admin")
async def cancel(request: Request, instance_id: str) -> HTTPResponse:
    """Cancel the instance (its workflow's cancel route, or with ``status_only`` only the
    status)."""
    target = _instance_id(instance_id)
    form = _form(request)
    try:
        cancelled = await operations.cancel(
            request.app.ctx.runtime,
            target,
            reason=_reason(form),
            request_id=request_id_of(request),
            status_only="status_only" in form,
        )
    except InstanceNotFound:
        raise
    except ConveyorError as error:
        return await _refused(request, target, error)
    instance = cancelled.instance
    if cancelled.mode != "already":
        metrics_of(request).transitions.inc(
            instance.workflow, "cancelled", version=instance.version
        )
    done = {"transition": "cancelled", "status": "cancelled_status"}.get(
        cancelled.mode, "cancel_already"
    )
    return _back(target, done)


@bp.post("/instances/<instance_id:str>/retry", ctx_public=True)
@signed_in("admin")
async def retry(request: Request, instance_id: str) -> HTTPResponse:
    """Re-activate a failed (or hurry a retrying) instance: its failed step runs again."""
    target = _instance_id(instance_id)
    runtime = request.app.ctx.runtime
    try:
        outcome = await operations.retry(runtime, target, request_id=request_id_of(request))
    except InstanceNotFound:
        raise
    except ConveyorError as error:
        return await _refused(request, target, error)
    instance = await runtime.get(target)
    metrics_of(request).transitions.inc(
        instance.workflow, f"retry_{outcome.status}", version=instance.version
    )
    done = f"retry_{outcome.status}"
    return _back(target, done if done in DONE else "retried")


@bp.post("/instances/<instance_id:str>/move", ctx_public=True)
@signed_in("admin")
async def move(request: Request, instance_id: str) -> HTTPResponse:
    """Put the instance into another state of its version (hooks only with ``run_hooks``)."""
    target = _instance_id(instance_id)
    form = _form(request)
    state = form.get("state", "")
    if not state or len(state) > 200 or "\x00" in state:
        raise InvalidRequest("choose a state")
    try:
        instance = await operations.move(
            request.app.ctx.runtime,
            target,
            state=state,
            reason=_reason(form),
            run_hooks="run_hooks" in form,
            request_id=request_id_of(request),
        )
    except InstanceNotFound:
        raise
    except ConveyorError as error:
        return await _refused(request, target, error)
    metrics_of(request).transitions.inc(instance.workflow, "moved", version=instance.version)
    return _back(target, "moved")


async def _refused(request: Request, target: uuid.UUID, error: ConveyorError) -> HTTPResponse:
    """The page again, saying why the action was refused (with the error's status)."""
    if error.status_code >= 500:
        raise error
    status = error.status_code if error.status_code >= 400 else 409
    fields = error.field_errors if isinstance(error, PayloadInvalid) else ()
    return await _show(request, target, refusal=Refusal(str(error), None, fields), status=status)


__all__ = ["DONE", "cancel", "instance_page", "move", "retry", "send_event"]
