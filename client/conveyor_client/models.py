"""What the API answers, as frozen dataclasses parsed from its JSON.

Each keeps the JSON object it was read from in ``raw``: a member a newer Conveyor adds is
there before this library names it. Timestamps are timezone-aware datetimes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")
JSON = Mapping[str, Any]


def parse_time(value: Any) -> datetime:
    """An RFC 3339 timestamp as an aware datetime (a naive one is taken as UTC)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a timestamp, got {value!r}")
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _maybe_time(value: Any) -> datetime | None:
    return None if value is None else parse_time(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _opt_dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``cursor`` for the next (None: last)."""

    items: tuple[T, ...]
    next_cursor: str | None
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON, item: Callable[[JSON], T]) -> Page[T]:
        return cls(
            items=tuple(item(i) for i in body.get("items") or ()),
            next_cursor=_opt_str(body.get("next_cursor")),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class EarlierInstance:
    """An instance that held a business key before (the workflow lets keys be reused)."""

    id: str
    version: int
    status: str
    state: str
    created_at: datetime
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> EarlierInstance:
        return cls(
            id=str(body["id"]),
            version=int(body["version"]),
            status=str(body["status"]),
            state=str(body["state"]),
            created_at=parse_time(body["created_at"]),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class Instance:
    """A workflow instance: where it is, its data, and whether it failed (``error``)."""

    id: str
    workflow: str
    version: int
    business_key: str
    state: str
    status: str
    """active, retrying, failed, completed or cancelled."""
    data: dict[str, Any]
    revision: int
    created_at: datetime
    updated_at: datetime
    state_entered_at: datetime
    sla_due_at: datetime | None
    sla_breached: bool
    error: dict[str, Any] | None
    earlier: tuple[EarlierInstance, ...]
    """Only from a lookup by business key: the instances that held the key before."""
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> Instance:
        return cls(
            id=str(body["id"]),
            workflow=str(body["workflow"]),
            version=int(body["version"]),
            business_key=str(body["business_key"]),
            state=str(body["state"]),
            status=str(body["status"]),
            data=_dict(body.get("data")),
            revision=int(body["revision"]),
            created_at=parse_time(body["created_at"]),
            updated_at=parse_time(body["updated_at"]),
            state_entered_at=parse_time(body["state_entered_at"]),
            sla_due_at=_maybe_time(body.get("sla_due_at")),
            sla_breached=bool(body.get("sla_breached", False)),
            error=_opt_dict(body.get("error")),
            earlier=tuple(EarlierInstance.parse(e) for e in body.get("earlier") or ()),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What sending (or retrying) an event did."""

    event_id: str
    status: str
    """applied, duplicate, failed, retrying or parked (a refusal is an exception)."""
    original_status: str | None
    """For a duplicate: what the first delivery of the event id did."""
    from_state: str | None
    to_state: str | None
    revision: int | None
    error: str | None
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> Outcome:
        revision = body.get("revision")
        return cls(
            event_id=str(body["event_id"]),
            status=str(body["status"]),
            original_status=_opt_str(body.get("original_status")),
            from_state=_opt_str(body.get("from_state")),
            to_state=_opt_str(body.get("to_state")),
            revision=None if revision is None else int(revision),
            error=_opt_str(body.get("error")),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """The answer to sending an event or retrying an instance: the outcome and the
    instance as it left it. ``accepted`` (HTTP 202) means kept but not applied yet."""

    outcome: Outcome
    instance: Instance
    accepted: bool
    raw: JSON = field(repr=False, compare=False)

    @property
    def status(self) -> str:
        return self.outcome.status

    @classmethod
    def parse(cls, body: JSON, *, accepted: bool = False) -> SendOutcome:
        return cls(
            outcome=Outcome.parse(body["outcome"]),
            instance=Instance.parse(body["instance"]),
            accepted=accepted,
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class CancelResult:
    """``mode``: transition (the cancel route ran), status (only the status changed) or
    already (it was cancelled before)."""

    mode: str
    transition: str | None
    instance: Instance
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> CancelResult:
        return cls(
            mode=str(body["mode"]),
            transition=_opt_str(body.get("transition")),
            instance=Instance.parse(body["instance"]),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of an instance's history: an event (or start, timer, operator action)."""

    id: int
    revision: int
    event_id: str
    event_type: str
    source: str
    from_state: str | None
    to_state: str | None
    transition: str | None
    payload: dict[str, Any]
    outcome: str
    reason: str | None
    request_id: str | None
    occurred_at: datetime
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> HistoryEntry:
        return cls(
            id=int(body["id"]),
            revision=int(body["revision"]),
            event_id=str(body["event_id"]),
            event_type=str(body["event_type"]),
            source=str(body["source"]),
            from_state=_opt_str(body.get("from_state")),
            to_state=_opt_str(body.get("to_state")),
            transition=_opt_str(body.get("transition")),
            payload=_dict(body.get("payload")),
            outcome=str(body["outcome"]),
            reason=_opt_str(body.get("reason")),
            request_id=_opt_str(body.get("request_id")),
            occurred_at=parse_time(body["occurred_at"]),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class Timer:
    """A pending timer; ``kind`` retry is Conveyor's own (``conveyor.retry``)."""

    name: str
    state: str
    due_at: datetime
    overdue_seconds: float
    kind: str
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> Timer:
        return cls(
            name=str(body["name"]),
            state=str(body["state"]),
            due_at=parse_time(body["due_at"]),
            overdue_seconds=float(body.get("overdue_seconds", 0.0)),
            kind=str(body.get("kind", "timer")),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    name: str
    description: str | None
    latest_version: int
    versions: tuple[int, ...]
    start_event: str | None
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> WorkflowSummary:
        return cls(
            name=str(body["name"]),
            description=_opt_str(body.get("description")),
            latest_version=int(body["latest_version"]),
            versions=tuple(int(v) for v in body.get("versions") or ()),
            start_event=_opt_str(body.get("start_event")),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class Workflow:
    """One version of a workflow as the API describes it; its transitions, events (with
    payload schemas), timers and migrations are in ``raw``."""

    name: str
    version: int
    versions: tuple[int, ...]
    """Every registered version of the workflow."""
    description: str | None
    initial_state: str | None
    start_event: str | None
    states: tuple[str, ...]
    allowed_events: dict[str, tuple[str, ...]]
    """Per state, the event types it accepts."""
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> Workflow:
        states = [s for s in body.get("states") or () if isinstance(s, Mapping)]
        return cls(
            name=str(body["name"]),
            version=int(body["version"]),
            versions=tuple(int(v) for v in body.get("versions") or ()),
            description=_opt_str(body.get("description")),
            initial_state=_opt_str(body.get("initial_state")),
            start_event=_opt_str(body.get("start_event")),
            states=tuple(str(s["name"]) for s in states),
            allowed_events={
                str(s["name"]): tuple(str(e) for e in s.get("allowed_events") or ()) for s in states
            },
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class StateStats:
    state: str
    total: int
    by_status: dict[str, int]
    oldest_state_entered_at: datetime | None
    sla_seconds: float | None
    sla_breached: int
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> StateStats:
        sla = body.get("sla_seconds")
        return cls(
            state=str(body["state"]),
            total=int(body["total"]),
            by_status={str(k): int(v) for k, v in _dict(body.get("by_status")).items()},
            oldest_state_entered_at=_maybe_time(body.get("oldest_state_entered_at")),
            sla_seconds=None if sla is None else float(sla),
            sla_breached=int(body.get("sla_breached", 0)),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class WorkflowStats:
    workflow: str
    version: int
    total: int
    by_status: dict[str, int]
    sla_breached: int
    states: tuple[StateStats, ...]
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> WorkflowStats:
        return cls(
            workflow=str(body["workflow"]),
            version=int(body["version"]),
            total=int(body["total"]),
            by_status={str(k): int(v) for k, v in _dict(body.get("by_status")).items()},
            sla_breached=int(body.get("sla_breached", 0)),
            states=tuple(StateStats.parse(s) for s in body.get("states") or ()),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class Stats:
    """How many instances are where, per workflow version, state and status."""

    as_of: datetime
    workflows: tuple[WorkflowStats, ...]
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> Stats:
        return cls(
            as_of=parse_time(body["as_of"]),
            workflows=tuple(WorkflowStats.parse(w) for w in body.get("workflows") or ()),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the worker could not apply. The message itself (``key``, ``headers``,
    ``value``) and ``resolution`` come only with :meth:`~conveyor_client.AsyncConveyor.
    dead_letter` and the replay and discard answers; in a list they are None."""

    id: int
    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    event_id: str | None
    event_type: str | None
    workflow: str | None
    business_key: str | None
    instance_id: str | None
    first_seen_at: datetime
    last_seen_at: datetime
    seen_count: int
    status: str
    """pending, replayed or discarded."""
    resolved_at: datetime | None
    key: str | None
    value: str | None
    headers: tuple[Any, ...] | None
    resolution: dict[str, Any] | None
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> DeadLetter:
        headers = body.get("headers")
        return cls(
            id=int(body["id"]),
            topic=str(body["topic"]),
            partition=int(body["partition"]),
            offset=int(body["offset"]),
            reason=str(body["reason"]),
            detail=str(body.get("detail", "")),
            event_id=_opt_str(body.get("event_id")),
            event_type=_opt_str(body.get("event_type")),
            workflow=_opt_str(body.get("workflow")),
            business_key=_opt_str(body.get("business_key")),
            instance_id=_opt_str(body.get("instance_id")),
            first_seen_at=parse_time(body["first_seen_at"]),
            last_seen_at=parse_time(body["last_seen_at"]),
            seen_count=int(body.get("seen_count", 1)),
            status=str(body["status"]),
            resolved_at=_maybe_time(body.get("resolved_at")),
            key=_opt_str(body.get("key")),
            value=_opt_str(body.get("value")),
            headers=tuple(headers) if isinstance(headers, list) else None,
            resolution=_opt_dict(body.get("resolution")),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class BulkPreview:
    """A bulk dry run: how many instances match now, and the oldest few."""

    action: str
    count: int
    sample: tuple[Instance, ...]
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> BulkPreview:
        return cls(
            action=str(body["action"]),
            count=int(body["count"]),
            sample=tuple(Instance.parse(i) for i in body.get("sample") or ()),
            raw=body,
        )


def _job_fields(body: JSON) -> dict[str, Any]:
    return {
        "id": str(body["id"]),
        "status": str(body["status"]),
        "filter": _dict(body.get("filter")),
        "spec": _dict(body.get("spec")),
        "total": int(body["total"]),
        "done": int(body["done"]),
        "succeeded": int(body["succeeded"]),
        "skipped": int(body["skipped"]),
        "failed": int(body["failed"]),
        "progress": float(body["progress"]),
        "request_id": _opt_str(body.get("request_id")),
        "created_at": parse_time(body["created_at"]),
        "updated_at": parse_time(body["updated_at"]),
        "finished_at": _maybe_time(body.get("finished_at")),
        "error": _opt_dict(body.get("error")),
        "raw": body,
    }


@dataclass(frozen=True, slots=True)
class BulkJob:
    """A bulk action (cancel, retry, send_event) the workers apply; ``status`` running,
    completed, failed or cancelled. ``created`` is False when an Idempotency-Key found
    the job made the first time."""

    id: str
    action: str
    status: str
    filter: dict[str, Any]
    spec: dict[str, Any]
    total: int
    done: int
    succeeded: int
    skipped: int
    failed: int
    progress: float
    request_id: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: dict[str, Any] | None
    raw: JSON = field(repr=False, compare=False)
    created: bool = True

    @property
    def finished(self) -> bool:
        return self.status != "running"

    @classmethod
    def parse(cls, body: JSON, *, created: bool = True) -> BulkJob:
        return cls(action=str(body["action"]), created=created, **_job_fields(body))


@dataclass(frozen=True, slots=True)
class MigrationJob:
    """A migration job the workers apply, read and cancelled like a bulk job."""

    id: str
    migration: str
    workflow: str
    from_version: int
    to_version: int
    force: bool
    status: str
    filter: dict[str, Any]
    spec: dict[str, Any]
    total: int
    done: int
    succeeded: int
    skipped: int
    failed: int
    progress: float
    request_id: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: dict[str, Any] | None
    raw: JSON = field(repr=False, compare=False)
    created: bool = True

    @property
    def finished(self) -> bool:
        return self.status != "running"

    @classmethod
    def parse(cls, body: JSON, *, created: bool = True) -> MigrationJob:
        return cls(
            migration=str(body["migration"]),
            workflow=str(body["workflow"]),
            from_version=int(body["from_version"]),
            to_version=int(body["to_version"]),
            force=bool(body.get("force", False)),
            created=created,
            **_job_fields(body),
        )


@dataclass(frozen=True, slots=True)
class JobItem:
    """One instance of a bulk or migration job, and what became of it."""

    instance_id: str
    status: str
    """pending, succeeded, skipped or failed."""
    reason: str | None
    done_at: datetime | None
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> JobItem:
        return cls(
            instance_id=str(body["instance_id"]),
            status=str(body["status"]),
            reason=_opt_str(body.get("reason")),
            done_at=_maybe_time(body.get("done_at")),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class Migration:
    """A migration a workflow declares between two of its versions."""

    name: str
    workflow: str
    from_version: int
    to_version: int
    description: str
    states: dict[str, str]
    not_migratable: tuple[str, ...]
    upgrades_data: bool
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> Migration:
        return cls(
            name=str(body["name"]),
            workflow=str(body["workflow"]),
            from_version=int(body["from_version"]),
            to_version=int(body["to_version"]),
            description=str(body.get("description", "")),
            states={str(k): str(v) for k, v in _dict(body.get("states")).items()},
            not_migratable=tuple(str(s) for s in body.get("not_migratable") or ()),
            upgrades_data=bool(body.get("upgrades_data", False)),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class MigrationVerdict:
    """What the migration would do to one instance: ok, diverges, unmapped or
    invalid_data (``divergence`` says where its replay parts from its history)."""

    instance_id: str
    business_key: str
    outcome: str
    from_state: str
    to_state: str | None
    divergence: dict[str, Any] | None
    reason: str | None
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> MigrationVerdict:
        return cls(
            instance_id=str(body["instance_id"]),
            business_key=str(body["business_key"]),
            outcome=str(body["outcome"]),
            from_state=str(body["from_state"]),
            to_state=_opt_str(body.get("to_state")),
            divergence=_opt_dict(body.get("divergence")),
            reason=_opt_str(body.get("reason")),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """A migration dry run: every selected instance judged; those that would not simply
    migrate listed in ``instances`` (``truncated`` when there were too many to list)."""

    migration: Migration
    selected: int
    would_migrate: int
    counts: dict[str, int]
    instances: tuple[MigrationVerdict, ...]
    truncated: bool
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON) -> MigrationReport:
        return cls(
            migration=Migration.parse(body["migration"]),
            selected=int(body["selected"]),
            would_migrate=int(body["would_migrate"]),
            counts={str(k): int(v) for k, v in _dict(body.get("counts")).items()},
            instances=tuple(MigrationVerdict.parse(v) for v in body.get("instances") or ()),
            truncated=bool(body.get("truncated", False)),
            raw=body,
        )


@dataclass(frozen=True, slots=True)
class Readiness:
    """``GET /ready``: ``ready`` when PostgreSQL and Kafka answer; ``checks`` per name."""

    ready: bool
    checks: dict[str, dict[str, str]]
    raw: JSON = field(repr=False, compare=False)

    @classmethod
    def parse(cls, body: JSON, *, ready: bool) -> Readiness:
        checks = {str(k): dict(v) for k, v in _dict(body.get("checks")).items()}
        return cls(ready=ready, checks=checks, raw=body)


__all__ = [
    "BulkJob",
    "BulkPreview",
    "CancelResult",
    "DeadLetter",
    "EarlierInstance",
    "HistoryEntry",
    "Instance",
    "JobItem",
    "Migration",
    "MigrationJob",
    "MigrationReport",
    "MigrationVerdict",
    "Outcome",
    "Page",
    "Readiness",
    "SendOutcome",
    "StateStats",
    "Stats",
    "Timer",
    "Workflow",
    "WorkflowStats",
    "WorkflowSummary",
    "parse_time",
]
