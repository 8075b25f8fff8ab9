"""Applying triggers to instances in transactions: load, plan, write.

:class:`Applier` is the runtime's transaction shell around the pure planning step
(:mod:`engine.planning`): it locks the batch's instances in id order, reads what planning
needs (processed event ids, live timers, parked events), plans, and writes the plan with
one set-based statement. The runtime, durable retries (:mod:`engine.retries`) and the
operator actions (:mod:`engine.operations`) all apply triggers through it, and none of them
reaches into another's internals.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from engine.clock import Clock
from engine.model import Event, InstanceStatus, InstanceTrigger, TimerFiring
from engine.observability import get_logger
from engine.planning import Loaded, Result, plan
from engine.registry import Registry
from engine.store import parked
from engine.store import statements as sql
from engine.store.database import driver_transaction
from engine.store.queries import instance_from_row
from engine.transient import CONFLICT_ERRORS
from engine.wire.topics import Topics

log = get_logger("conveyor.runtime")

T = TypeVar("T")

TRANSACTION_ATTEMPTS = 5
"""How often a transaction that lost a race (deadlock, serialization failure, an event id
recorded concurrently) is run again before its error is raised."""


class RuntimeObserver(Protocol):
    """Told about every transaction that applied triggers (for metrics)."""

    def transaction(self, *, triggers: int, decide_seconds: float, commit_seconds: float) -> None:
        """``decide_seconds``: the pure steps of the batch; ``commit_seconds``: its write and
        commit."""


@dataclass(slots=True)
class Timing:
    """Where a batch's time went: planning, and from the write to the commit."""

    decide_seconds: float = 0.0
    write_started: float = 0.0


async def retry_conflicts(transaction: Callable[[], Awaitable[T]]) -> T:
    """Run ``transaction`` again while it loses a race, up to ``TRANSACTION_ATTEMPTS``."""
    for attempt in range(TRANSACTION_ATTEMPTS):
        try:
            return await transaction()
        except CONFLICT_ERRORS as exc:
            if attempt == TRANSACTION_ATTEMPTS - 1:
                raise
            log.info("transaction conflict; retrying", error=type(exc).__name__)
    raise AssertionError("unreachable")


class Applier:
    """Applies triggers to instances, a batch per transaction."""

    def __init__(
        self,
        db: AsyncEngine,
        registry: Registry,
        topics: Topics,
        clock: Clock,
        observer: RuntimeObserver | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.topics = topics
        self.clock = clock
        self.observer = observer

    async def apply(
        self, triggers: Sequence[InstanceTrigger], *, wait: bool = True
    ) -> list[Result]:
        """Apply triggers in one transaction (run again on a deadlock or a duplicate race).

        With ``wait=False`` instances locked by another transaction are skipped and their
        triggers come back ``deferred``.
        """

        async def once() -> list[Result]:
            timing = Timing()
            async with driver_transaction(self.db) as conn:
                results = await self.apply_locked(conn, triggers, wait, timing)
            if self.observer is not None and timing.write_started:
                self.observer.transaction(
                    triggers=len(triggers),
                    decide_seconds=timing.decide_seconds,
                    commit_seconds=time.perf_counter() - timing.write_started,
                )
            return results

        return await retry_conflicts(once)

    async def apply_locked(
        self,
        conn: asyncpg.Connection,
        triggers: Sequence[InstanceTrigger],
        wait: bool = True,
        timing: Timing | None = None,
    ) -> list[Result]:
        """Load, plan, write: one batch inside the caller's transaction."""
        loaded = await self.load(conn, triggers, wait)
        now = self.clock()
        planned = await plan(self.registry, self.topics, triggers, loaded, now)
        if timing is not None:
            timing.decide_seconds = planned.decide_seconds
        if planned.writes:
            if timing is not None:
                timing.write_started = time.perf_counter()
            await planned.writes.write(conn)
        await parked.park(conn, planned.parked, now)
        return planned.results

    async def load(
        self, conn: asyncpg.Connection, triggers: Sequence[InstanceTrigger], wait: bool
    ) -> Loaded:
        """Lock the batch's instances (in id order) and read what planning needs: which
        (instance, event id) pairs were processed, which timers are still live, and which
        events wait behind a failed instance's step."""
        targets = await self.targets(conn, triggers)
        instance_ids = sorted({t for t in targets if t})
        timer_ids = [t.timer_id for t in triggers if isinstance(t, TimerFiring)]
        # Event ids are deduplicated per instance (see statements.LOCK_INSTANCES_WITH_SEEN):
        # ``seen`` holds the processed (instance id, event id) pairs.
        event_ids = [t.event_id for t in triggers]
        live_timers: frozenset[str] = frozenset()
        seen: frozenset[tuple[uuid.UUID, str]]
        if timer_ids:
            # Timers need a fresh snapshot taken after the lock: a cancelled timer must
            # not fire (there is no unique index to catch it afterwards).
            lock = sql.LOCK_INSTANCES if wait else sql.LOCK_INSTANCES_SKIP_LOCKED
            rows = await conn.fetch(lock, instance_ids)
            seen_rows = await conn.fetch(
                sql.SEEN_EVENTS_AND_LIVE_TIMERS, targets, event_ids, timer_ids
            )
            seen = frozenset((r["instance_id"], r["id"]) for r in seen_rows if r["kind"] == "e")
            live_timers = frozenset(r["id"] for r in seen_rows if r["kind"] == "t")
        else:
            lock = (
                sql.LOCK_INSTANCES_WITH_SEEN if wait else sql.LOCK_INSTANCES_WITH_SEEN_SKIP_LOCKED
            )
            rows = await conn.fetch(lock, instance_ids, targets, event_ids)
            seen = (
                frozenset(zip(rows[0]["seen_instances"], rows[0]["seen_events"], strict=True))
                if rows
                else frozenset()
            )
        instances = [instance_from_row(row) for row in rows]
        failed = [i.id for i in instances if i.status is InstanceStatus.FAILED]
        waiting = await parked.parked_pairs(conn, failed) if failed else frozenset()
        return Loaded(targets, instances, seen, live_timers, waiting, wait)

    async def targets(
        self, conn: asyncpg.Connection, triggers: Sequence[InstanceTrigger]
    ) -> list[uuid.UUID | None]:
        """Each trigger's instance id: given, or found by (workflow, business key)."""
        keyed = {
            (t.workflow, t.business_key)
            for t in triggers
            if isinstance(t, Event) and t.instance_id is None
        }
        by_key: dict[tuple[str, str], uuid.UUID] = {}
        if keyed:
            pairs = sorted(keyed)
            rows = await conn.fetch(
                sql.RESOLVE_BUSINESS_KEYS, [p[0] for p in pairs], [p[1] for p in pairs]
            )
            by_key = {(r["workflow"], r["business_key"]): r["id"] for r in rows}
        targets: list[uuid.UUID | None] = []
        for t in triggers:
            if isinstance(t, TimerFiring) or t.instance_id is not None:
                targets.append(t.instance_id)
            else:
                targets.append(by_key.get((t.workflow, t.business_key)))  # type: ignore[arg-type]
        return targets


__all__ = ["TRANSACTION_ATTEMPTS", "Applier", "RuntimeObserver", "Timing", "retry_conflicts"]
