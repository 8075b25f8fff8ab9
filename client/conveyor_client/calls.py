"""Every ``/v1`` call as a :class:`Call`: method, path, query, body, headers, whether it
may be sent again, and how to read the answer. Pure: no I/O. The async and sync clients
(:mod:`conveyor_client.aio`, :mod:`conveyor_client.sync`) only send calls built here.

When a call may be sent again (``retry_safe``):

* reads (GET), and dry runs, always;
* a start with an ``Idempotency-Key`` (one is generated when none is given): the API
  answers a repeat with the first response;
* an event sent with an id (one is generated when none is given, and sent as the body's
  ``id``): Conveyor deduplicates event ids per instance, a repeat answers ``duplicate``;
* a bulk or migration job created with an ``Idempotency-Key`` (generated when none is
  given): a repeat answers the job made the first time;
* a cancel: the API makes it idempotent (``mode: already``).

Retry, move, and the dead-letter replay and discard are sent again only when the
connection could not be opened (nothing reached the server).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypedDict, TypeVar
from urllib.parse import quote

from conveyor_client.models import (
    BulkJob,
    BulkPreview,
    CancelResult,
    DeadLetter,
    HistoryEntry,
    Instance,
    JobItem,
    Migration,
    MigrationJob,
    MigrationReport,
    Page,
    Readiness,
    SendOutcome,
    Stats,
    Timer,
    Workflow,
    WorkflowSummary,
)

T = TypeVar("T")
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_PAGE_SIZE = 100

BulkAction = Literal["cancel", "retry", "send_event"]
InstanceStatus = Literal["active", "retrying", "failed", "completed", "cancelled"]
ItemStatus = Literal["pending", "succeeded", "skipped", "failed"]
DeadLetterStatus = Literal["pending", "replayed", "discarded"]
When = datetime | str
"""A date-time filter: an aware datetime, or ISO 8601 text (without offset: UTC)."""
Duration = timedelta | str
"""A duration filter: a timedelta, or ISO 8601 text (``PT2H``, ``P1D``)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, as the clients hand it to a call's parser."""

    status: int
    headers: Mapping[str, str]
    body: Any
    """The JSON body (None when empty), or the text of a ``text/plain`` answer."""


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and how to read its answer.

    ``ok`` lists the statuses that are answers (others raise the typed error of
    :mod:`conveyor_client.errors`); ``retry_safe`` says whether the request may be sent
    again after a lost connection or a 503.
    """

    method: str
    path: str
    parse: Callable[[Answer], T]
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_safe: bool = True
    ok: frozenset[int] = frozenset({200})
    text: bool = False
    """The answer is text (the diagram), not JSON."""


class InstanceFilters(TypedDict, total=False):
    """The filters of ``GET /v1/instances`` (and of bulk jobs), combined with AND.

    ``data`` filters business-data fields the workflow's data schema declares (it needs
    ``workflow``): ``{"customer_id": "C-7"}``, nested fields as nested mappings or dotted
    names. ``in_state_longer_than`` and ``sla_breached`` select running instances.
    """

    workflow: str
    version: int
    state: str
    status: InstanceStatus
    business_key_prefix: str
    in_state_longer_than: Duration
    sla_breached: bool
    created_after: When
    created_before: When
    updated_after: When
    updated_before: When
    data: Mapping[str, Any]


# ---------------------------------------------------------------- values on the wire


def iso_duration(value: Duration) -> str:
    """A duration as ISO 8601 text (``PT5400S`` for 90 minutes)."""
    if isinstance(value, str):
        return value
    seconds = value.total_seconds()
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


def iso_time(value: When) -> str:
    return value if isinstance(value, str) else value.isoformat()


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return iso_duration(value)
    return str(value)


def _flatten(data: Mapping[str, Any], prefix: str) -> list[tuple[str, str]]:
    flat: list[tuple[str, str]] = []
    for name, value in data.items():
        if isinstance(value, Mapping):
            flat.extend(_flatten(value, f"{prefix}{name}."))
        else:
            flat.append((f"{prefix}{name}", _param_text(value)))
    return flat


def filter_params(filters: InstanceFilters) -> list[tuple[str, str]]:
    """The filters as query parameters (``data.<field>=value`` for data filters)."""
    params: list[tuple[str, str]] = []
    for name, value in filters.items():
        if value is None:
            continue
        if name == "data":
            assert isinstance(value, Mapping)
            params.extend(_flatten(value, "data."))
        else:
            params.append((name, _param_text(value)))
    return params


def filter_body(filters: InstanceFilters, *, ids: list[str] | None = None) -> dict[str, Any]:
    """The filters as a bulk job's ``filter`` object."""
    body: dict[str, Any] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if name == "data":
            assert isinstance(value, Mapping)
            body["data"] = dict(value)
        elif isinstance(value, datetime | timedelta):
            body[name] = _param_text(value)
        else:
            body[name] = value
    if ids is not None:
        body["ids"] = list(ids)
    return body


def _segment(value: str) -> str:
    """A path segment, percent-encoded whole (``a/b`` -> ``a%2Fb``)."""
    return quote(value, safe="")


def new_key() -> str:
    """A fresh idempotency key or event id."""
    return str(uuid.uuid4())


# ---------------------------------------------------------------- parsers


def _json(answer: Answer) -> Mapping[str, Any]:
    body = answer.body
    if not isinstance(body, Mapping):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _instance(answer: Answer) -> Instance:
    return Instance.parse(_json(answer))


def _instances(answer: Answer) -> Page[Instance]:
    return Page.parse(_json(answer), Instance.parse)


def _send_outcome(answer: Answer) -> SendOutcome:
    return SendOutcome.parse(_json(answer), accepted=answer.status == 202)


# ---------------------------------------------------------------- health


def health() -> Call[bool]:
    return Call("GET", "/health", lambda a: _json(a).get("status") == "ok")


def ready() -> Call[Readiness]:
    """``GET /ready``: a 503 here is an answer (not ready), not an error."""
    return Call(
        "GET",
        "/ready",
        lambda a: Readiness.parse(_json(a), ready=a.status == 200),
        ok=frozenset({200, 503}),
        retry_safe=False,
    )


# ---------------------------------------------------------------- workflows


def workflows() -> Call[list[WorkflowSummary]]:
    return Call(
        "GET",
        "/v1/workflows",
        lambda a: [WorkflowSummary.parse(w) for w in _json(a).get("items") or ()],
    )


def workflow(name: str, version: int | None = None) -> Call[Workflow]:
    params = (("version", str(version)),) if version is not None else ()
    return Call(
        "GET", f"/v1/workflows/{_segment(name)}", lambda a: Workflow.parse(_json(a)), params
    )


def diagram(name: str, version: int | None = None, instance_id: str | None = None) -> Call[str]:
    params: list[tuple[str, str]] = []
    if version is not None:
        params.append(("version", str(version)))
    if instance_id is not None:
        params.append(("instance", str(instance_id)))
    return Call(
        "GET",
        f"/v1/workflows/{_segment(name)}/diagram",
        lambda a: str(a.body),
        tuple(params),
        text=True,
    )


def start(
    workflow: str,
    business_key: str,
    data: Mapping[str, Any],
    *,
    version: int | None = None,
    idempotency_key: str | None = None,
) -> Call[Instance]:
    """Start an instance under an ``Idempotency-Key`` (a new one unless given: pass your
    own, e.g. derived from the order id, to make a start repeated by your own retries
    answer the first instance too)."""
    body: dict[str, Any] = {"business_key": business_key, "data": dict(data)}
    if version is not None:
        body["version"] = version
    return Call(
        "POST",
        f"/v1/workflows/{_segment(workflow)}/instances",
        _instance,
        json=body,
        headers={IDEMPOTENCY_HEADER: idempotency_key or new_key()},
        ok=frozenset({200, 201}),
    )


def find(workflow: str, business_key: str) -> Call[Instance]:
    """The instance holding ``business_key`` (with ``earlier`` ones that held it)."""
    return Call(
        "GET",
        f"/v1/workflows/{_segment(workflow)}/instances/{_segment(business_key)}",
        _instance,
    )


# ---------------------------------------------------------------- instances


def get(instance_id: str) -> Call[Instance]:
    return Call("GET", f"/v1/instances/{_segment(str(instance_id))}", _instance)


def instances_page(
    filters: InstanceFilters, *, cursor: str | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> Call[Page[Instance]]:
    params = filter_params(filters)
    params.append(("limit", str(limit)))
    if cursor is not None:
        params.append(("cursor", cursor))
    return Call("GET", "/v1/instances", _instances, tuple(params))


def send(
    instance_id: str,
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    event_id: str | None = None,
) -> Call[SendOutcome]:
    """Send an event with id ``event_id`` (a new one unless given). The id makes a repeat
    harmless: Conveyor answers ``duplicate`` with what the first delivery did."""
    body = {"type": type, "payload": dict(payload or {}), "id": event_id or new_key()}
    return Call(
        "POST",
        f"/v1/instances/{_segment(str(instance_id))}/events",
        _send_outcome,
        json=body,
        ok=frozenset({200, 202}),
    )


def history_page(
    instance_id: str, *, cursor: str | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> Call[Page[HistoryEntry]]:
    params = [("limit", str(limit))]
    if cursor is not None:
        params.append(("cursor", cursor))
    return Call(
        "GET",
        f"/v1/instances/{_segment(str(instance_id))}/history",
        lambda a: Page.parse(_json(a), HistoryEntry.parse),
        tuple(params),
    )


def timers(instance_id: str) -> Call[list[Timer]]:
    return Call(
        "GET",
        f"/v1/instances/{_segment(str(instance_id))}/timers",
        lambda a: [Timer.parse(t) for t in _json(a).get("items") or ()],
    )


def cancel(instance_id: str, *, reason: str = "", status_only: bool = False) -> Call[CancelResult]:
    """Operator (admin key). Idempotent: a repeat answers ``mode: already``."""
    return Call(
        "POST",
        f"/v1/instances/{_segment(str(instance_id))}/cancel",
        lambda a: CancelResult.parse(_json(a)),
        json={"reason": reason, "status_only": status_only},
    )


def retry(instance_id: str) -> Call[SendOutcome]:
    """Operator (admin key): re-apply the event that failed the instance. Not repeated
    after a lost answer (a second retry of a recovered instance is a 409)."""
    return Call(
        "POST",
        f"/v1/instances/{_segment(str(instance_id))}/retry",
        _send_outcome,
        retry_safe=False,
        ok=frozenset({200, 202}),
    )


def move(
    instance_id: str, state: str, *, reason: str = "", run_hooks: bool = False
) -> Call[Instance]:
    """Operator (admin key): put the instance into ``state``. Not repeated after a lost
    answer."""
    return Call(
        "POST",
        f"/v1/instances/{_segment(str(instance_id))}/move",
        _instance,
        json={"state": state, "reason": reason, "run_hooks": run_hooks},
        retry_safe=False,
    )


def stats(workflow: str | None = None) -> Call[Stats]:
    params = (("workflow", workflow),) if workflow is not None else ()
    return Call("GET", "/v1/stats", lambda a: Stats.parse(_json(a)), params)


# ---------------------------------------------------------------- dead letters


class DeadLetterFilters(TypedDict, total=False):
    reason: str
    topic: str
    workflow: str
    business_key: str
    status: DeadLetterStatus
    since: When
    until: When


def dead_letters_page(
    filters: DeadLetterFilters, *, cursor: str | None = None, limit: int = 50
) -> Call[Page[DeadLetter]]:
    params = [(k, _param_text(v)) for k, v in filters.items() if v is not None]
    params.append(("limit", str(limit)))
    if cursor is not None:
        params.append(("cursor", cursor))
    return Call(
        "GET",
        "/v1/dead-letters",
        lambda a: Page.parse(_json(a), DeadLetter.parse),
        tuple(params),
    )


def dead_letter(letter_id: int) -> Call[DeadLetter]:
    return Call("GET", f"/v1/dead-letters/{int(letter_id)}", lambda a: DeadLetter.parse(_json(a)))


def replay_dead_letter(
    letter_id: int,
    *,
    value: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    new_id: bool = False,
) -> Call[DeadLetter]:
    """Operator (admin key): apply the message now, as stored, as a corrected CloudEvent
    (``value``) or with corrected ``data``. Not repeated after a lost answer."""
    body: dict[str, Any] = {"new_id": new_id}
    if value is not None:
        body["value"] = dict(value)
    if data is not None:
        body["data"] = dict(data)
    return Call(
        "POST",
        f"/v1/dead-letters/{int(letter_id)}/replay",
        lambda a: DeadLetter.parse(_json(a)),
        json=body,
        retry_safe=False,
    )


def discard_dead_letter(letter_id: int, *, reason: str = "") -> Call[DeadLetter]:
    """Operator (admin key): give up on the message. Not repeated after a lost answer."""
    return Call(
        "POST",
        f"/v1/dead-letters/{int(letter_id)}/discard",
        lambda a: DeadLetter.parse(_json(a)),
        json={"reason": reason},
        retry_safe=False,
    )


# ---------------------------------------------------------------- bulk actions


def _bulk_body(
    action: BulkAction,
    filters: InstanceFilters,
    ids: list[str] | None,
    *,
    select_all: bool,
    reason: str,
    status_only: bool,
    event_type: str | None,
    payload: Mapping[str, Any] | None,
) -> dict[str, Any]:
    selection = filter_body(filters, ids=ids)
    if select_all:
        selection["all"] = True
    body: dict[str, Any] = {
        "action": action,
        "filter": selection,
        "reason": reason,
        "status_only": status_only,
    }
    if event_type is not None:
        body["event"] = {"type": event_type, "payload": dict(payload or {})}
    return body


def bulk_preview(
    action: BulkAction,
    filters: InstanceFilters,
    *,
    ids: list[str] | None = None,
    select_all: bool = False,
    reason: str = "",
    status_only: bool = False,
    event_type: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Call[BulkPreview]:
    """A dry run (admin key): how many instances the action would touch; nothing written."""
    body = _bulk_body(
        action,
        filters,
        ids,
        select_all=select_all,
        reason=reason,
        status_only=status_only,
        event_type=event_type,
        payload=payload,
    )
    body["dry_run"] = True
    return Call("POST", "/v1/bulk", lambda a: BulkPreview.parse(_json(a)), json=body)


def bulk_create(
    action: BulkAction,
    filters: InstanceFilters,
    *,
    ids: list[str] | None = None,
    select_all: bool = False,
    reason: str = "",
    status_only: bool = False,
    event_type: str | None = None,
    payload: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Call[BulkJob]:
    """Create a bulk job (admin key) under an ``Idempotency-Key`` (a new one unless
    given), so a repeat answers the job made the first time."""
    body = _bulk_body(
        action,
        filters,
        ids,
        select_all=select_all,
        reason=reason,
        status_only=status_only,
        event_type=event_type,
        payload=payload,
    )
    return Call(
        "POST",
        "/v1/bulk",
        lambda a: BulkJob.parse(_json(a), created=a.status == 202),
        json=body,
        headers={IDEMPOTENCY_HEADER: idempotency_key or new_key()},
        ok=frozenset({200, 202}),
    )


def bulk_job(job_id: str) -> Call[BulkJob]:
    return Call("GET", f"/v1/bulk/{_segment(str(job_id))}", lambda a: BulkJob.parse(_json(a)))


def _items_page(
    path: str, status: ItemStatus | None, cursor: str | None, limit: int
) -> Call[Page[JobItem]]:
    params = [("limit", str(limit))]
    if status is not None:
        params.append(("status", status))
    if cursor is not None:
        params.append(("cursor", cursor))
    return Call("GET", path, lambda a: Page.parse(_json(a), JobItem.parse), tuple(params))


def bulk_items_page(
    job_id: str,
    *,
    status: ItemStatus | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Call[Page[JobItem]]:
    return _items_page(f"/v1/bulk/{_segment(str(job_id))}/items", status, cursor, limit)


def cancel_bulk_job(job_id: str) -> Call[BulkJob]:
    """Stop a running job (admin key); a finished job is answered as it is (idempotent)."""
    return Call(
        "POST", f"/v1/bulk/{_segment(str(job_id))}/cancel", lambda a: BulkJob.parse(_json(a))
    )


# ---------------------------------------------------------------- migrations


class MigrationFilters(TypedDict, total=False):
    """Which running instances of the source version a migration selects (AND)."""

    states: list[str]
    status: Literal["active", "retrying", "failed"]
    business_key_prefix: str
    ids: list[str]


def migrations(workflow: str) -> Call[list[Migration]]:
    return Call(
        "GET",
        f"/v1/workflows/{_segment(workflow)}/migrations",
        lambda a: [Migration.parse(m) for m in _json(a).get("items") or ()],
    )


def _migration_body(
    from_version: int, to_version: int, filters: MigrationFilters | None, force: bool
) -> dict[str, Any]:
    return {
        "from_version": from_version,
        "to_version": to_version,
        "filter": dict(filters or {}),
        "force": force,
    }


def migration_dry_run(
    workflow: str,
    from_version: int,
    to_version: int,
    filters: MigrationFilters | None = None,
    *,
    force: bool = False,
) -> Call[MigrationReport]:
    """Judge each selected instance by replay (admin key); nothing written."""
    body = _migration_body(from_version, to_version, filters, force)
    body["dry_run"] = True
    return Call(
        "POST",
        f"/v1/workflows/{_segment(workflow)}/migrations",
        lambda a: MigrationReport.parse(_json(a)),
        json=body,
    )


def migrate(
    workflow: str,
    from_version: int,
    to_version: int,
    filters: MigrationFilters | None = None,
    *,
    force: bool = False,
    idempotency_key: str | None = None,
) -> Call[MigrationJob]:
    """Create a migration job (admin key) under an ``Idempotency-Key`` (a new one unless
    given), so a repeat answers the job made the first time."""
    return Call(
        "POST",
        f"/v1/workflows/{_segment(workflow)}/migrations",
        lambda a: MigrationJob.parse(_json(a), created=a.status == 202),
        json=_migration_body(from_version, to_version, filters, force),
        headers={IDEMPOTENCY_HEADER: idempotency_key or new_key()},
        ok=frozenset({200, 202}),
    )


def migration_job(job_id: str) -> Call[MigrationJob]:
    return Call(
        "GET", f"/v1/migrations/{_segment(str(job_id))}", lambda a: MigrationJob.parse(_json(a))
    )


def migration_items_page(
    job_id: str,
    *,
    status: ItemStatus | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> Call[Page[JobItem]]:
    return _items_page(f"/v1/migrations/{_segment(str(job_id))}/items", status, cursor, limit)


def cancel_migration_job(job_id: str) -> Call[MigrationJob]:
    """Stop a running migration job (admin key); idempotent."""
    return Call(
        "POST",
        f"/v1/migrations/{_segment(str(job_id))}/cancel",
        lambda a: MigrationJob.parse(_json(a)),
    )


__all__ = [
    "Answer",
    "BulkAction",
    "Call",
    "DeadLetterFilters",
    "InstanceFilters",
    "MigrationFilters",
    "filter_body",
    "filter_params",
    "iso_duration",
]
