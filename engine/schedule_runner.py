"""Firing schedules: each tick once, whichever workers run the scheduler.

Every worker's ``scheduler`` service runs a :class:`ScheduleRunner`. A round is one
transaction: lock the due ``schedules`` rows (``for update skip locked``: a row another
runner holds is passed by, not waited for), decide with :func:`engine.ticks.due` which
ticks fire and which the missed-tick policy passes over, fire them on the same connection
(a start through :meth:`engine.runtime.Runtime.start` with ``conn``; a CloudEvent into
the outbox), record a ``schedule_ticks`` row per tick, move ``next_tick``, commit. So a
tick's effect, its record and the schedule's advance commit together or not at all: a
runner that dies before committing leaves the row due, and the next round redoes the
whole tick.

Ids come from the tick (``{schedule}@{tick in UTC}``): the start's idempotency key is
``schedule:{tick id}`` and its history's event id the tick id; a published event's id is
a UUIDv5 of the tick id. ``schedule_ticks.tick_id`` is unique, and a round first drops
ticks already recorded: a duplicate has no effect.

A manual :func:`trigger` fires now with its own id (``{schedule}@manual:{uuid}``), does
not move ``next_tick`` and works while paused. Definitions live in code; each process
fires only the schedules it declares with the same definition as the row's
``fingerprint`` (cron, interval, anchor, zone), and whose workflow it has: a worker
running an older definition during a deploy leaves the row to the others.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.errors import ConveyorError, InstanceConflict, InvalidRequest
from engine.ids import name_id
from engine.liveness import DatabaseOutage
from engine.messaging.metrics import WorkerMetrics
from engine.observability import get_logger
from engine.polling import poll
from engine.registry import Registry
from engine.runtime import Runtime
from engine.schedules import ScheduleSpec
from engine.store import schedules as store
from engine.store.database import driver_transaction
from engine.store.schedules import TickRecord
from engine.store.writeset import WriteSet
from engine.ticks import due, next_tick
from engine.wire.cloudevents import CloudEvent

log = get_logger("conveyor.schedules")

SCHEDULE_EVENT_NAMESPACE = uuid.UUID("6f1c2b3a-4d5e-5f60-8a7b-9c0d1e2f3a4b")
"""Published ids of schedule events: uuid5(namespace, tick id)."""
OUTCOMES = ("started", "existing", "conflict", "published", "skipped", "failed")
MAX_TICKS_PAGE = 500


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A declared schedule and its row (or, before any worker synced it, what it would be)."""

    spec: ScheduleSpec
    paused: bool
    next_tick: datetime
    """When it fires next (it does not while paused)."""
    last_tick: datetime | None
    """The last scheduled tick fired (not a manual one)."""
    last_outcome: str | None
    """The outcome of the newest tick record (scheduled or manual)."""
    last_fired_at: datetime | None
    updated_at: datetime
    stored: bool
    """Whether the schedule has its row (a worker synced it, or it was paused)."""


def tick_id(name: str, tick: datetime) -> str:
    """The id of a scheduled tick: the schedule's name and the instant, in UTC."""
    stamp = tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if tick.microsecond:
        stamp += f".{tick.astimezone(UTC).microsecond:06d}"
    return f"{name}@{stamp}Z"


def fingerprint(spec: ScheduleSpec) -> str:
    """What computes the ticks: a row keeps the fingerprint of its ``next_tick``."""
    if spec.cron is not None:
        return f"cron {spec.cron} in {spec.timezone}"
    assert spec.every is not None
    return f"every {spec.every.total_seconds():g}s from {spec.anchor.isoformat()}"


def event_id(tick: str) -> str:
    """The CloudEvent id a tick publishes under."""
    return name_id(SCHEDULE_EVENT_NAMESPACE, tick)


def runnable(registry: Registry) -> dict[str, ScheduleSpec]:
    """The declared schedules this process can fire: a publishing one, or a starting one
    whose workflow is registered here."""
    return {
        spec.name: spec
        for spec in registry.schedules()
        if spec.workflow is None or spec.workflow in registry
    }


async def sync_schedules(db: AsyncEngine, registry: Registry, now: datetime) -> None:
    """A row per declared schedule that has none (next tick: the first after ``now``); a
    row whose definition changed gets the new fingerprint and the next tick after
    ``now``. Rows of schedules no longer declared are left alone (and never fire)."""
    rows = [(s.name, fingerprint(s), next_tick(s, now)) for s in registry.schedules()]
    changed = await store.sync(db, rows, now)
    log.info("schedules synced", declared=len(rows), inserted_or_changed=changed)


async def list_schedules(
    db: AsyncEngine, registry: Registry, *, now: datetime | None = None
) -> list[ScheduleState]:
    """The declared schedules, by name, with their rows (``now``: for those without one)."""
    specs = registry.schedules()
    rows, lasts = await store.states(db, [s.name for s in specs])
    when = now or datetime.now(UTC)
    return [_state(spec, rows.get(spec.name), lasts.get(spec.name), when) for spec in specs]


async def get_schedule(
    db: AsyncEngine, registry: Registry, name: str, *, now: datetime | None = None
) -> ScheduleState:
    """One declared schedule; `UnknownSchedule` (404) if there is none of that name."""
    spec = registry.schedule(name)
    rows, lasts = await store.states(db, [name])
    return _state(spec, rows.get(name), lasts.get(name), now or datetime.now(UTC))


def _state(
    spec: ScheduleSpec,
    row: store.StateRow | None,
    last: tuple[str, datetime] | None,
    now: datetime,
) -> ScheduleState:
    if row is None:
        outcome, fired_at = last if last is not None else (None, None)
        return ScheduleState(
            spec, False, next_tick(spec, now), None, outcome, fired_at, now, stored=False
        )
    return ScheduleState(
        spec,
        row.paused,
        row.next_tick,
        row.last_tick,
        row.last_outcome,
        row.last_fired_at,
        row.updated_at,
        stored=True,
    )


async def ticks(
    db: AsyncEngine, name: str, *, limit: int = 50, before: str | None = None
) -> tuple[list[TickRecord], str | None]:
    """A schedule's tick records, newest first, and the cursor of the next page (None at
    the end). ``before``: a cursor from a previous page. `InvalidRequest` (400) for a
    bad cursor or a limit outside 1-500."""
    if not 1 <= limit <= MAX_TICKS_PAGE:
        raise InvalidRequest(f"limit must be 1-{MAX_TICKS_PAGE}")
    cursor: int | None = None
    if before is not None:
        if not before.isdigit() or len(before) > 18:
            raise InvalidRequest("before: not a cursor of this list")
        cursor = int(before)
    page = await store.ticks_page(db, name, limit + 1, cursor)
    more = len(page) > limit
    page = page[:limit]
    return page, (str(page[-1].id) if more and page[-1].id is not None else None)


async def pause(db: AsyncEngine, registry: Registry, name: str, now: datetime) -> ScheduleState:
    """Stop the schedule firing (idempotent); a manual trigger still works."""
    spec = registry.schedule(name)
    await store.pause(db, name, fingerprint(spec), next_tick(spec, now), now)
    return await get_schedule(db, registry, name, now=now)


async def resume(db: AsyncEngine, registry: Registry, name: str, now: datetime) -> ScheduleState:
    """Fire again from the first tick after ``now``: ticks missed while paused are not
    fired (nor recorded). Resuming a running schedule changes nothing."""
    spec = registry.schedule(name)
    await store.resume(db, name, fingerprint(spec), next_tick(spec, now), now)
    return await get_schedule(db, registry, name, now=now)


async def trigger(
    runtime: Runtime,
    registry: Registry,
    name: str,
    now: datetime,
    *,
    request_id: str | None = None,
) -> TickRecord:
    """Fire the schedule now, once, with its own id; ``next_tick`` does not move and a
    paused schedule fires too. The business key is the template's at ``now`` (so a
    daily key already taken by today's tick gives the outcome ``conflict``)."""
    spec = registry.schedule(name)
    own_id = f"{name}@manual:{uuid.uuid4()}"
    async with driver_transaction(runtime.db) as conn:
        writes = WriteSet(now, runtime.topics)
        record = await _fire(runtime, conn, writes, spec, now, own_id, now, True, request_id)
        if writes:
            await writes.write(conn)
        await store.record_ticks(conn, [record])
    log.info("schedule triggered", schedule=name, tick_id=own_id, outcome=record.outcome)
    return record


async def _fire(
    runtime: Runtime,
    conn: asyncpg.Connection,
    writes: WriteSet,
    spec: ScheduleSpec,
    tick: datetime,
    this_id: str,
    now: datetime,
    manual: bool,
    request_id: str | None,
) -> TickRecord:
    """Fire one tick on ``conn`` (a publish is queued on ``writes``); its record."""
    lateness = 0.0 if manual else max((now - tick).total_seconds(), 0.0)

    def record(
        outcome: str,
        key: str | None,
        *,
        instance_id: uuid.UUID | None = None,
        message_id: uuid.UUID | None = None,
        detail: str | None = None,
    ) -> TickRecord:
        return TickRecord(
            spec.name,
            this_id,
            tick,
            manual,
            now,
            outcome,
            instance_id,
            message_id,
            key,
            detail,
            lateness,
            request_id,
        )

    try:
        key = spec.key_for(tick)
        data = spec.data_for(tick)
    except Exception as error:  # the schedule's own data function: recorded, not raised
        return record("failed", None, detail=f"data or key: {type(error).__name__}: {error}")
    if spec.event_type is not None:
        message_id = event_id(this_id)
        writes.publish(
            message_id,
            runtime.topics.shared,
            key,
            CloudEvent(
                id=message_id,
                source=f"conveyor/schedule/{spec.name}",
                type=spec.event_type,
                subject=key,
                time=tick.astimezone(UTC).isoformat(),
                data=data,
                extensions={"conveyorschedule": spec.name, "conveyortick": this_id},
            ),
        )
        return record("published", key, message_id=uuid.UUID(message_id))
    assert spec.workflow is not None
    try:
        result = await runtime.start(
            spec.workflow,
            key,
            data,
            idempotency_key=f"schedule:{this_id}",
            source="schedule",
            request_id=request_id,
            event_id=this_id,
            conn=conn,
        )
    except InstanceConflict as error:
        return record("conflict", key, detail=str(error))
    except ConveyorError as error:  # data refused by the schema, workflow unknown, ...
        return record("failed", key, detail=f"{type(error).__name__}: {error}")
    outcome = "started" if result.created else "existing"
    return record(outcome, key, instance_id=result.instance.id)


class ScheduleRunner:
    """Fires due schedules until stopped (a worker's ``scheduler`` service)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        batch_size: int = 200,
        poll_interval: float = 1.0,
        retry_max: float = 2.0,
        outage: DatabaseOutage | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.runtime = runtime
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_max = retry_max
        self.outage = outage or DatabaseOutage(float("inf"))
        self.metrics = metrics
        self.specs = runnable(runtime.registry)
        self.fingerprints = {name: fingerprint(spec) for name, spec in self.specs.items()}
        self.fired = 0
        self._claimed = 0
        self._synced = False
        for spec in runtime.registry.schedules():
            if spec.name not in self.specs:
                log.warning(
                    "schedule not fired here: its workflow is not registered",
                    schedule=spec.name,
                    workflow=spec.workflow,
                )

    async def fire_due(self) -> list[TickRecord]:
        """One round: claim the due rows, fire and record their ticks, advance them, in
        one transaction. Returns the tick records written (fired and passed over)."""
        self._claimed = 0
        if not self.specs:
            return []
        runtime = self.runtime
        now = runtime.clock()
        records: list[TickRecord] = []
        async with driver_transaction(runtime.db) as conn:
            rows = await store.claim_due(conn, now, self.fingerprints, self.batch_size)
            self._claimed = len(rows)
            if not rows:
                return []
            plans = [(row, self.specs[row.name]) for row in rows]
            decisions = [due(spec, row.next_tick, now) for row, spec in plans]
            planned = [
                tick_id(spec.name, t)
                for (_, spec), d in zip(plans, decisions, strict=True)
                for t in (*d.skipped, *d.fire)
            ]
            already = await store.recorded(conn, planned)
            writes = WriteSet(now, runtime.topics)
            moves: list[tuple[str, datetime, datetime | None]] = []
            for (row, spec), decision in zip(plans, decisions, strict=True):
                records.extend(self._skipped(spec, decision.skipped, decision.skipped_count, now))
                for tick in decision.fire:
                    this_id = tick_id(spec.name, tick)
                    if this_id in already:
                        log.warning("tick already recorded: not fired again", tick_id=this_id)
                        continue
                    records.append(
                        await _fire(runtime, conn, writes, spec, tick, this_id, now, False, None)
                    )
                last = decision.fire[-1] if decision.fire else None
                moves.append((row.name, decision.next_tick, last))
            records = [r for r in records if r.outcome != "skipped" or r.tick_id not in already]
            if writes:
                await writes.write(conn)
            await store.record_ticks(conn, records)
            await store.advance(conn, moves, now)
        self._count(records)
        return records

    @staticmethod
    def _skipped(
        spec: ScheduleSpec, skipped: Sequence[datetime], count: int, now: datetime
    ) -> list[TickRecord]:
        """A record per missed tick the policy passed over (the first says how many more,
        beyond those listed, were passed over without a record)."""
        if count > len(skipped) and not skipped:  # "all" beyond max_catch_up
            log.warning(
                "missed ticks beyond max_catch_up not fired",
                schedule=spec.name,
                passed_over=count,
            )
        records = []
        for index, tick in enumerate(skipped):
            detail = f"missed; policy {spec.missed}"
            if index == 0 and count > len(skipped):
                detail += f"; {count - len(skipped)} earlier missed ticks not recorded"
            records.append(
                TickRecord(
                    spec.name,
                    tick_id(spec.name, tick),
                    tick,
                    False,
                    now,
                    "skipped",
                    None,
                    None,
                    None,
                    detail,
                    max((now - tick).total_seconds(), 0.0),
                    None,
                )
            )
        return records

    def _count(self, records: Sequence[TickRecord]) -> None:
        fired = [r for r in records if r.outcome != "skipped"]
        self.fired += len(fired)
        if self.metrics is not None:
            for r in records:
                self.metrics.schedule_ticks[(r.schedule, r.outcome)] += 1
                if r.outcome != "skipped":
                    self.metrics.schedule_lateness.observe(r.lateness_seconds)
        if records:
            log.info(
                "schedule ticks",
                fired=len(fired),
                skipped=len(records) - len(fired),
                late_max=max((r.lateness_seconds for r in fired), default=0.0),
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Sync the declared schedules, then fire due ticks until ``stop`` is set."""
        if not self.specs:
            # Nothing to fire. Rounds that touch no database would also count as successes
            # on the worker's outage clock and hide a lost database from it.
            log.info("schedule runner idle: no schedule is declared here")
            await stop.wait()
            return
        log.info("schedule runner started", schedules=len(self.specs))

        async def round_() -> bool:
            if not self._synced:
                await sync_schedules(self.runtime.db, self.runtime.registry, self.runtime.clock())
                self._synced = True
            await self.fire_due()
            return self._claimed >= self.batch_size  # more may be due now

        await poll(
            round_,
            stop,
            name="schedule runner",
            poll_interval=self.poll_interval,
            retry_max=self.retry_max,
            outage=self.outage,
        )
        log.info("schedule runner stopped", fired=self.fired)


__all__ = [
    "OUTCOMES",
    "ScheduleRunner",
    "ScheduleState",
    "TickRecord",
    "event_id",
    "fingerprint",
    "get_schedule",
    "list_schedules",
    "pause",
    "resume",
    "runnable",
    "sync_schedules",
    "tick_id",
    "ticks",
    "trigger",
]
