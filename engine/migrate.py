"""Migrating running instances to another version of their workflow.

A migration (declared with :class:`engine.evolution.Migration`) is run over a selection of
a workflow's running instances (active, retrying or failed) on its source version:

* a **dry run** replays each selected instance's history against the target version
  (:mod:`engine.replay`) and reports, per instance, ``ok``, ``diverges`` (where, and what
  the target decided instead), ``unmapped`` or ``invalid_data``. Nothing is written.
* **applying** it creates a durable job (``jobs`` kind ``migration``, its targets fixed in
  ``job_items``), which every worker's job runner (and ``conveyor instances migrate``
  while it shows the progress) applies a batch at a time, one transaction per batch, like
  the bulk actions (:mod:`engine.bulk_runner`): a crash loses only an uncommitted batch,
  whose items are still pending, and an instance is migrated once. Each batch judges its
  locked instances again; those that diverge are skipped unless the job is forced;
  ``unmapped`` and ``invalid_data`` ones always are.

Migrating an instance puts it on the target version, in the mapped state, with the
upgraded data; its status and ``state_entered_at`` stay. The timers of its old state go and
those of the new state are set from ``state_entered_at`` (a 30-minute timeout keeps its
deadline), except one that already fired in this visit of the state and is not pending. A
history row (``conveyor.migrate``, outcome ``migrated``: the migration, the versions, the
verdict, the upgraded data, the operator's request id) and a ``state_changed`` message are
written with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine import bulk
from engine.decisions import TimerToSet
from engine.errors import ConveyorError, InvalidRequest
from engine.evolution import MigrationSpec
from engine.model import Instance
from engine.replay import Step, Verdict, VerdictOutcome, judge
from engine.runtime import Runtime
from engine.store import evolution as store
from engine.store import jobs
from engine.store import statements as sql
from engine.store.database import driver_connection, driver_transaction
from engine.store.jobs import Job, Settled
from engine.store.queries import Arguments, InstanceFilter, filter_clause, instance_from_row
from engine.store.writeset import HistoryRow, InstanceUpdate, WriteSet

KIND = "migration"
ACTION = "migrate"
MIGRATE_EVENT = "conveyor.migrate"
"""The event type of a migration in history and ``state_changed``."""

RUNNING = ("active", "retrying", "failed")
PAGE_SIZE = 500
"""Instances a dry run judges per database round trip."""
DRY_RUN_LIMIT = 100_000
"""The most instances one dry run walks (a request answers when it is done)."""
YIELD_EVERY = 20
"""A dry run gives the event loop back after judging this many instances."""
REPORT_LIMIT = 1_000
"""The most instances a dry-run report lists one by one (all are counted)."""

GONE = "the instance no longer exists"

_ID_NAMESPACE = uuid.UUID("0e6b1a2c-7d4f-5a3b-9c8e-1f2a3b4c5d6e")

NO_NUL = r"^[^\x00]*$"


class MigrationFilter(BaseModel):
    """Which running instances of the source version a migration selects (AND)."""

    model_config = ConfigDict(extra="forbid")

    states: list[str] | None = Field(None, min_length=1, max_length=200)
    status: Literal["active", "retrying", "failed"] | None = None
    business_key_prefix: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    ids: list[uuid.UUID] | None = Field(None, min_length=1, max_length=10_000)


@dataclass(frozen=True, slots=True)
class MigrationRequest:
    """Run migration ``workflow`` v``from_version`` -> v``to_version`` over ``filter``."""

    workflow: str
    from_version: int
    to_version: int
    filter: MigrationFilter = dataclasses.field(default_factory=MigrationFilter)
    force: bool = False

    def spec(self, migration: MigrationSpec) -> dict[str, Any]:
        """The job's ``spec`` column: everything needed to apply it, as JSON."""
        return {
            "migration": migration.name,
            "workflow": self.workflow,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "filter": self.filter.model_dump(mode="json", exclude_none=True),
            "force": self.force,
        }


def parse_filter(raw: Any) -> MigrationFilter:
    """A JSON object as a :class:`MigrationFilter`; InvalidRequest naming what is wrong."""
    try:
        return MigrationFilter.model_validate(raw or {})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"]) or "filter"
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown filter {name!r}")
            else:
                problems.append(f"{name}: {error['msg']}")
        raise InvalidRequest("invalid filter: " + "; ".join(problems)) from None


class MigrationTooLarge(ConveyorError):
    status_code = 422
    title = "Too many instances"


class MigrationNotFound(ConveyorError):
    status_code = 404
    title = "Migration job not found"


class JobKeyReused(bulk.JobKeyReused):
    pass


def resolve(runtime: Runtime, request: MigrationRequest) -> MigrationSpec:
    """The declared migration the request names (UnknownMigration if none), with the
    filter's states checked against its source version."""
    migration = runtime.registry.migration(
        request.workflow, request.from_version, request.to_version
    )
    for state in request.filter.states or ():
        if state not in migration.source.states:
            known = ", ".join(migration.source.states)
            raise InvalidRequest(
                f"invalid filter: states: {migration.source.label} declares no state "
                f"{state!r}; its states: {known}"
            )
    return migration


def selection(runtime: Runtime, request: MigrationRequest) -> tuple[str, Arguments]:
    """The SQL condition selecting the request's instances: running, on the source
    version, matching the filter."""
    f = request.filter
    arg = Arguments()
    where = filter_clause(
        InstanceFilter(
            workflow=request.workflow,
            version=request.from_version,
            business_key_prefix=f.business_key_prefix,
            ids=tuple(f.ids) if f.ids is not None else None,
        ),
        arg,
        now=runtime.clock(),
        slas=(),
    )
    statuses = [f.status] if f.status else list(RUNNING)
    where += f" and status = any({arg(statuses)}::text[])"
    if f.states:
        where += f" and state = any({arg(list(f.states))}::text[])"
    return where, arg


# ---------------------------------------------------------------------------- dry run


@dataclass(slots=True)
class Report:
    """A dry run's findings: every selected instance counted by verdict; the instances
    that would not simply migrate listed (up to :data:`REPORT_LIMIT`)."""

    migration: MigrationSpec
    total: int = 0
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    listed: list[tuple[Instance, Verdict]] = dataclasses.field(default_factory=list)
    truncated: bool = False

    def add(self, instance: Instance, verdict: Verdict) -> None:
        self.total += 1
        self.counts[verdict.outcome] += 1
        if verdict.outcome != "ok":
            if len(self.listed) < REPORT_LIMIT:
                self.listed.append((instance, verdict))
            else:
                self.truncated = True

    def to_json(self, *, force: bool = False) -> dict[str, Any]:
        outcomes: tuple[VerdictOutcome, ...] = ("ok", "diverges", "unmapped", "invalid_data")
        counts = {o: self.counts.get(o, 0) for o in outcomes}
        would = counts["ok"] + (counts["diverges"] if force else 0)
        return {
            "dry_run": True,
            "migration": self.migration.to_json(),
            "selected": self.total,
            "would_migrate": would,
            "counts": counts,
            "instances": [
                {"instance_id": str(i.id), "business_key": i.business_key, **v.to_json()}
                for i, v in self.listed
            ],
            "truncated": self.truncated,
        }


async def dry_run(
    runtime: Runtime,
    request: MigrationRequest,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Judge every selected instance by replay (:func:`engine.replay.judge`); nothing is
    written. ``progress(done, total)`` is called after each page."""
    migration = resolve(runtime, request)
    where, args = selection(runtime, request)
    report = Report(migration)
    async with driver_connection(runtime.db) as conn:
        total = await store.count(conn, where, args)
        if total > DRY_RUN_LIMIT:
            raise MigrationTooLarge(
                f"{total:,} instances match; a dry run judges at most {DRY_RUN_LIMIT:,}: "
                "narrow the filter (states, business_key_prefix)"
            )
        after: uuid.UUID | None = None
        while True:
            page = await store.page(conn, where, args, after=after, limit=PAGE_SIZE)
            if not page:
                break
            history = await store.steps(conn, [i.id for i in page])
            for n, instance in enumerate(page):
                steps = history[instance.id]
                report.add(instance, await judge(migration, instance.state, instance.data, steps))
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # judging is CPU: let the loop serve others
            after = page[-1].id
            if progress is not None:
                progress(report.total, total)
    return report


# ---------------------------------------------------------------------------- jobs


def job_id_for(idempotency_key: str) -> uuid.UUID:
    """The job id an idempotency key stands for: retrying a creation finds the same job."""
    return uuid.uuid5(_ID_NAMESPACE, idempotency_key)


async def create(
    runtime: Runtime,
    request: MigrationRequest,
    *,
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Create the migration job and fix its targets in one transaction; (job, created).
    With ``idempotency_key``, creating again returns the first job (or raises
    :class:`JobKeyReused` when the request differs)."""
    migration = resolve(runtime, request)
    where, args = selection(runtime, request)
    job_id = job_id_for(idempotency_key) if idempotency_key else uuid.uuid4()
    spec = request.spec(migration)
    try:
        async with driver_transaction(runtime.db) as conn:
            job, created = await jobs.create(
                conn,
                job_id=job_id,
                kind=KIND,
                action=ACTION,
                spec=spec,
                request_id=request_id,
                where=where,
                args=args,
                cap=bulk.MAX_JOB_ITEMS,
                now=runtime.clock(),
            )
    except jobs.TooManyItems as exc:
        raise MigrationTooLarge(
            f"more than {exc.cap:,} instances match; narrow the filter (or split the job)"
        ) from None
    if not created and (job.kind, job.spec) != (KIND, spec):
        raise JobKeyReused(f"the idempotency key already names job {job.id}, which differs")
    return job, created


async def get(runtime: Runtime, job_id: uuid.UUID) -> Job:
    job = await jobs.get(runtime.db, job_id)
    if job is None or job.kind != KIND:
        raise MigrationNotFound(f"no migration job {job_id}")
    return job


async def items(
    runtime: Runtime,
    job_id: uuid.UUID,
    *,
    status: jobs.ItemStatus | None = None,
    after: uuid.UUID | None = None,
    limit: int = 100,
) -> list[jobs.JobItem]:
    await get(runtime, job_id)
    return await jobs.items(runtime.db, job_id, status=status, after=after, limit=limit)


def job_json(job: Job) -> dict[str, Any]:
    """A migration job as the API and the CLI show it."""
    shown = bulk.job_json(job)
    shown.pop("action", None)
    shown["migration"] = job.spec.get("migration")
    shown["workflow"] = job.spec.get("workflow")
    shown["from_version"] = job.spec.get("from_version")
    shown["to_version"] = job.spec.get("to_version")
    shown["force"] = bool(job.spec.get("force", False))
    return shown


def request_of(job: Job) -> MigrationRequest:
    spec = job.spec
    return MigrationRequest(
        workflow=spec["workflow"],
        from_version=int(spec["from_version"]),
        to_version=int(spec["to_version"]),
        filter=MigrationFilter.model_validate(spec.get("filter") or {}),
        force=bool(spec.get("force", False)),
    )


# ---------------------------------------------------------------------------- one batch


async def apply_batch(
    runtime: Runtime, conn: asyncpg.Connection, job: Job, ids: Sequence[uuid.UUID]
) -> list[Settled]:
    """Migrate the claimed instances of ``job`` in the caller's transaction: lock them,
    check they are still selected, judge each by replay, migrate those it may."""
    request = request_of(job)
    migration = resolve(runtime, request)
    rows = await conn.fetch(sql.LOCK_INSTANCES, sorted(ids))
    found = {r["id"]: instance_from_row(r) for r in rows}
    where, args = selection(runtime, request)
    still = await jobs.matching(conn, where, args, list(found))
    settled: list[Settled] = []
    targets: list[Instance] = []
    for instance_id in ids:
        instance = found.get(instance_id)
        if instance is None:
            settled.append(Settled(instance_id, "skipped", GONE))
        elif instance_id not in still:
            settled.append(Settled(instance_id, "skipped", bulk.NO_LONGER_MATCHES))
        else:
            targets.append(instance)
    if not targets:
        return settled
    target_ids = [i.id for i in targets]
    history = await store.steps(conn, target_ids)
    pending = await store.pending_timers(conn, target_ids)
    now = runtime.clock()
    writes = WriteSet(now, runtime.topics)
    moved: list[uuid.UUID] = []
    for instance in targets:
        steps = history[instance.id]
        verdict = await judge(migration, instance.state, instance.data, steps)
        if verdict.outcome == "ok" or (verdict.outcome == "diverges" and request.force):
            _migrate(writes, migration, job, instance, verdict, steps, pending.get(instance.id, {}))
            moved.append(instance.id)
            reason = f"migrated to '{verdict.to_state}'"
            if verdict.divergence is not None:
                reason += f" (forced; diverges: {verdict.divergence.reason})"
            settled.append(Settled(instance.id, "succeeded", reason[:2000]))
        else:
            why = verdict.reason or (verdict.divergence.reason if verdict.divergence else "")
            settled.append(Settled(instance.id, "skipped", f"{verdict.outcome}: {why}"[:2000]))
    if moved:
        await store.change_version(conn, moved, migration.to_version)
        await writes.write(conn)
    return settled


def _migrate(
    writes: WriteSet,
    migration: MigrationSpec,
    job: Job,
    instance: Instance,
    verdict: Verdict,
    steps: Sequence[Step],
    pending: dict[str, Any],
) -> None:
    assert verdict.to_state is not None
    assert verdict.data is not None
    to_state, data = verdict.to_state, verdict.data
    revision = instance.revision + 1
    event_id = f"migrate:{job.id}:{instance.id}"
    status = instance.status.value
    writes.update(
        instance.id,
        InstanceUpdate(to_state, data, status, revision, None, _error(instance, to_state)),
    )
    writes.history(
        HistoryRow(
            instance.id,
            revision,
            event_id,
            MIGRATE_EVENT,
            "operator",
            "migrated",
            {
                "migration": migration.name,
                "job_id": str(job.id),
                "from_version": migration.from_version,
                "to_version": migration.to_version,
                "verdict": verdict.to_json(),
                "forced": verdict.outcome != "ok",
                "data": dict(data),
            },
            from_state=instance.state,
            to_state=to_state,
            transition=migration.name,
            reason=verdict.divergence.reason if verdict.divergence else None,
            request_id=job.request_id,
        )
    )
    writes.state_changed(
        dataclasses.replace(instance, version=migration.to_version),
        from_state=instance.state,
        to_state=to_state,
        status=status,
        revision=revision,
        event_id=event_id,
        event_type=MIGRATE_EVENT,
        request_id=job.request_id,
    )
    entered = instance.state_entered_at
    fired = {  # timers that fired in this visit of the state and stayed in it
        s.event_type
        for s in steps
        if s.outcome == "applied"
        and s.source == "timer"
        and s.from_state == s.to_state == instance.state
        and s.occurred_at >= entered
    }
    for timer in migration.target.states[to_state].timers:
        if timer.name in fired and timer.name not in pending:
            continue  # it fired in this visit of the state: not again
        writes.set_timer(
            instance.id,
            event_id,
            TimerToSet(timer.name, timer.state, entered + timer.delay, timer.transition),
        )


def _error(instance: Instance, to_state: str) -> dict[str, Any] | None:
    """A failed (or retrying) instance's ``error`` after the move to ``to_state``: the
    trigger that failed is retried there, so a timer names its new state."""
    if instance.error is None:
        return None
    error = dict(instance.error)
    if isinstance(error.get("timer"), dict):
        error["timer"] = {**error["timer"], "state": to_state}
    if "state" in error:
        error["state"] = to_state
    return error


__all__ = [
    "ACTION",
    "DRY_RUN_LIMIT",
    "KIND",
    "MIGRATE_EVENT",
    "REPORT_LIMIT",
    "MigrationFilter",
    "MigrationNotFound",
    "MigrationRequest",
    "MigrationTooLarge",
    "Report",
    "apply_batch",
    "create",
    "dry_run",
    "get",
    "items",
    "job_id_for",
    "job_json",
    "parse_filter",
    "request_of",
    "resolve",
    "selection",
]
