"""Bulk actions: cancel, retry or send an event to every instance a filter selects, as a
durable job.

Creating a job fixes its targets: in one transaction the job row is written and the ids
of the matching instances are copied into ``job_items`` (at most :data:`MAX_JOB_ITEMS`).
When a batch applies the action it checks the filter again against the instances it has
locked: one that no longer matches (it moved on meanwhile) is skipped, with the reason
:data:`NO_LONGER_MATCHES`.
Runners (:mod:`engine.bulk_runner`: every worker, and the CLI while it waits) then apply
the action a batch at a time, each batch in one transaction with the items it settles, so
a crash re-does only an uncommitted batch and no instance gets the action twice. A dry run
counts the matching instances and shows a sample, and writes nothing.

The filter has the names of ``GET /v1/instances``'s query parameters (see
:class:`BulkFilter`); an empty filter is refused unless it says ``all``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine import data_filters
from engine.errors import ConveyorError, InvalidRequest, NotFound
from engine.model import Instance, InstanceStatus
from engine.runtime import Runtime
from engine.slas import state_slas
from engine.spec import RESERVED_EVENT_PREFIX
from engine.store import jobs
from engine.store.database import driver_transaction
from engine.store.queries import Arguments, InstanceFilter, filter_clause
from engine.time_params import DateTimeParam, DurationParam

Action = Literal["cancel", "retry", "send_event"]
ACTIONS: tuple[Action, ...] = ("cancel", "retry", "send_event")
KIND = "bulk"

MAX_JOB_ITEMS = 1_000_000
"""The most instances one job may target; narrow the filter (or run several jobs) beyond."""

SAMPLE_SIZE = 20
"""How many matching instances a dry run shows (the oldest)."""

JOB_CANCELLED = "job cancelled"
"""The reason given to the items a cancelled job never reached."""

NO_LONGER_MATCHES = "no longer matches the filter"
"""The reason given to an item whose instance changed, after the job was created, so
that the job's filter no longer selects it (an order paid meanwhile, say)."""

NO_NUL = r"^[^\x00]*$"

RESERVED_TYPE = (
    f"event types starting with {RESERVED_EVENT_PREFIX} are reserved; cancel instances with "
    "the cancel action"
)

_ID_NAMESPACE = uuid.UUID("6f1d8a4e-3c2b-5e7f-9a10-b2c3d4e5f601")


class BulkFilter(BaseModel):
    """Which instances a bulk action targets: the filters of ``GET /v1/instances`` (same
    names), combined with AND; ``data`` holds business-data fields (field -> value, nested
    objects for nested fields; it needs ``workflow``); ``ids`` names instances. ``all``
    must be true to select every instance (an empty filter is refused)."""

    model_config = ConfigDict(extra="forbid")

    workflow: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    version: int | None = Field(None, ge=1, le=2**31 - 1)
    state: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    status: InstanceStatus | None = None
    business_key_prefix: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    in_state_longer_than: DurationParam | None = Field(
        None,
        description="ISO 8601 duration, e.g. PT2H or P1D (at most 100 years): running "
        "instances only.",
    )
    sla_breached: bool | None = None
    created_after: DateTimeParam | None = None
    created_before: DateTimeParam | None = None
    updated_after: DateTimeParam | None = None
    updated_before: DateTimeParam | None = None
    data: dict[str, Any] | None = Field(
        None, description='Business-data fields, e.g. {"customer_id": "C-7"}; needs workflow.'
    )
    ids: list[uuid.UUID] | None = Field(None, min_length=1, max_length=10_000)
    all: bool = Field(False, description="Allow an empty filter: every instance.")

    def is_empty(self) -> bool:
        return not self.model_dump(exclude_none=True, exclude={"all"})


def parse_filter(raw: Mapping[str, Any], *, texts: bool = False) -> BulkFilter:
    """``raw`` as a filter: a JSON object with JSON types (strictly: ``"2"`` is no
    version), or, with ``texts``, ``name=value`` texts from the CLI (parsed by their
    types). InvalidRequest naming each unknown or bad filter, and refusing an empty one."""
    try:
        if texts:
            parsed = BulkFilter.model_validate(raw)
        else:
            parsed = BulkFilter.model_validate_json(orjson.dumps(raw), strict=True)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"]) or "filter"
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown filter {name!r}")
            else:
                problems.append(f"{name}: {error['msg']}")
        raise InvalidRequest("invalid filter: " + "; ".join(problems)) from None
    if parsed.is_empty() and not parsed.all:
        raise InvalidRequest(
            'an empty filter selects every instance: give filters, or "all": true '
            "(--all) to mean it"
        )
    return parsed


def instance_filter(runtime: Runtime, spec: BulkFilter) -> InstanceFilter:
    """The store's filter for ``spec``; its ``data`` checked against the workflow's data
    schema by the same rules as ``data.<field>`` query parameters."""
    data = None
    if spec.data:
        if spec.workflow is None:
            raise InvalidRequest("invalid filter: data needs workflow")
        schema = runtime.registry.get(spec.workflow, spec.version).data_schema
        data = data_filters.data_filter(schema, _flatten(spec.data, data_filters.PREFIX))
    return InstanceFilter(
        workflow=spec.workflow,
        version=spec.version,
        state=spec.state,
        status=spec.status,
        business_key_prefix=spec.business_key_prefix,
        created_after=spec.created_after,
        created_before=spec.created_before,
        updated_after=spec.updated_after,
        updated_before=spec.updated_before,
        data=data,
        in_state_longer_than=spec.in_state_longer_than,
        sla_breached=spec.sla_breached,
        ids=tuple(spec.ids) if spec.ids is not None else None,
    )


def _flatten(data: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """``{"payment": {"provider": "x"}, "total": 12}`` as the query parameters
    ``data.payment.provider=x`` and ``data.total=12`` (a value as its text)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, bool):
            flat[name] = "true" if value else "false"
        elif value is None:
            flat[name] = "null"
        elif isinstance(value, str | int | float):
            flat[name] = str(value)
        else:
            raise InvalidRequest(f"invalid filter: {name}: give a single value (text or number)")
    return flat


@dataclass(frozen=True, slots=True)
class BulkRequest:
    """What to do to which instances. ``event``: the type and payload of the event to
    send (``send_event``); ``status_only``: cancel without the workflow's cancel route."""

    action: Action
    filter: BulkFilter
    reason: str = ""
    event_type: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    status_only: bool = False

    def __post_init__(self) -> None:
        if self.action == "send_event" and not self.event_type:
            raise InvalidRequest("send_event needs an event: {type, payload}")
        if self.event_type is not None and self.event_type.startswith(RESERVED_EVENT_PREFIX):
            raise InvalidRequest(RESERVED_TYPE)
        if self.action != "send_event" and self.event_type is not None:
            raise InvalidRequest(f"{self.action} takes no event")
        if self.status_only and self.action != "cancel":
            raise InvalidRequest("status_only is for cancel")

    def spec(self) -> dict[str, Any]:
        """The job's ``spec`` column: everything needed to apply it, as JSON."""
        spec: dict[str, Any] = {
            "filter": self.filter.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
            "reason": self.reason,
        }
        if self.action == "send_event":
            spec["event"] = {"type": self.event_type, "payload": dict(self.payload)}
        if self.status_only:
            spec["status_only"] = True
        return spec


@dataclass(frozen=True, slots=True)
class Preview:
    """A dry run: how many instances match, and the oldest few."""

    count: int
    sample: list[Instance]


class JobNotFound(NotFound):
    pass


class JobKeyReused(ConveyorError):
    """An idempotency key already names a job that does something else."""

    status_code = 422
    title = "Idempotency key reused"


class JobTooLarge(ConveyorError):
    status_code = 422
    title = "Too many instances"


def _where(runtime: Runtime, filters: InstanceFilter) -> tuple[str, Arguments]:
    arg = Arguments()
    slas = tuple(state_slas(runtime.registry, filters.workflow))
    return filter_clause(filters, arg, now=runtime.clock(), slas=slas), arg


async def still_matching(
    runtime: Runtime, conn: asyncpg.Connection, job: jobs.Job, ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Of ``ids`` (instances the caller's transaction has locked), those the job's filter
    (as stored in its spec) selects now: a job is applied only to instances that still
    match, however long after its creation it runs."""
    spec = BulkFilter.model_validate(job.spec.get("filter", {}))
    where, args = _where(runtime, instance_filter(runtime, spec))
    return await jobs.matching(conn, where, args, ids)


async def preview(runtime: Runtime, request: BulkRequest) -> Preview:
    """Dry run: count the instances the request would target; nothing is written."""
    where, args = _where(runtime, instance_filter(runtime, request.filter))
    count, sample = await jobs.preview(runtime.db, where, args, sample=SAMPLE_SIZE)
    return Preview(count, sample)


def job_id_for(idempotency_key: str) -> uuid.UUID:
    """The job id an idempotency key stands for: retrying a creation finds the same job."""
    return uuid.uuid5(_ID_NAMESPACE, idempotency_key)


async def create(
    runtime: Runtime,
    request: BulkRequest,
    *,
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[jobs.Job, bool]:
    """Create the job and fix its targets, in one transaction; returns (job, created).

    With ``idempotency_key`` the job id derives from it: creating again with the same key
    returns the job made the first time (``created`` false), or raises
    :class:`JobKeyReused` when the request differs. Raises :class:`JobTooLarge` beyond
    :data:`MAX_JOB_ITEMS` instances."""
    where, args = _where(runtime, instance_filter(runtime, request.filter))
    job_id = job_id_for(idempotency_key) if idempotency_key else uuid.uuid4()
    spec = request.spec()
    try:
        async with driver_transaction(runtime.db) as conn:
            job, created = await jobs.create(
                conn,
                job_id=job_id,
                kind=KIND,
                action=request.action,
                spec=spec,
                request_id=request_id,
                where=where,
                args=args,
                cap=MAX_JOB_ITEMS,
                now=runtime.clock(),
            )
    except jobs.TooManyItems as exc:
        raise JobTooLarge(
            f"more than {exc.cap:,} instances match; narrow the filter (or split the job)"
        ) from None
    if not created and (job.kind, job.action, job.spec) != (KIND, request.action, spec):
        raise JobKeyReused(f"the idempotency key already names job {job.id}, which differs")
    return job, created


async def get(runtime: Runtime, job_id: uuid.UUID) -> jobs.Job:
    job = await jobs.get(runtime.db, job_id)
    if job is None or job.kind != KIND:
        raise JobNotFound(f"no bulk job {job_id}")
    return job


async def items(
    runtime: Runtime,
    job_id: uuid.UUID,
    *,
    status: jobs.ItemStatus | None = None,
    after: uuid.UUID | None = None,
    limit: int = 100,
) -> list[jobs.JobItem]:
    """The job's items in instance id order (of one status), after ``after``."""
    await get(runtime, job_id)
    return await jobs.items(runtime.db, job_id, status=status, after=after, limit=limit)


async def cancel(runtime: Runtime, job_id: uuid.UUID) -> jobs.Job:
    """Stop a running job: the items it has not reached are skipped (``job cancelled``);
    a batch being applied finishes first. A finished job is returned unchanged."""
    await get(runtime, job_id)
    async with driver_transaction(runtime.db) as conn:
        return await jobs.cancel(conn, job_id, runtime.clock(), JOB_CANCELLED)


def job_json(job: jobs.Job) -> dict[str, Any]:
    """A job as the API and the CLI show it."""
    return {
        "id": str(job.id),
        "action": job.action,
        "status": job.status,
        "filter": job.spec.get("filter", {}),
        "spec": job.spec,
        "total": job.total,
        "done": job.done,
        "succeeded": job.succeeded,
        "skipped": job.skipped,
        "failed": job.failed,
        "progress": progress(job),
        "request_id": job.request_id,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "error": job.error,
    }


def progress(job: jobs.Job) -> float:
    """How much of the job is done, 0..1 (an empty job is done when it finished)."""
    if job.total == 0:
        return 0.0 if job.status == "running" else 1.0
    return round(job.done / job.total, 4)


def item_json(item: jobs.JobItem) -> dict[str, Any]:
    return {
        "instance_id": str(item.instance_id),
        "status": item.status,
        "reason": item.reason,
        "done_at": item.done_at.isoformat() if item.done_at else None,
    }


__all__ = [
    "ACTIONS",
    "JOB_CANCELLED",
    "KIND",
    "MAX_JOB_ITEMS",
    "NO_LONGER_MATCHES",
    "RESERVED_TYPE",
    "SAMPLE_SIZE",
    "Action",
    "BulkFilter",
    "BulkRequest",
    "JobKeyReused",
    "JobNotFound",
    "JobTooLarge",
    "Preview",
    "cancel",
    "create",
    "get",
    "instance_filter",
    "item_json",
    "items",
    "job_id_for",
    "job_json",
    "parse_filter",
    "preview",
    "progress",
    "still_matching",
]
