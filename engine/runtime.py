"""The durable runtime: load, decide, persist, in one transaction per batch.

The shell around the pure step. For a batch of triggers (one HTTP event, or a Kafka
``getmany`` worth for many instances) it:

1. locks the instances in id order (``SELECT ... FOR UPDATE``: one trigger at a time per
   instance, no deadlocks between batches);
2. skips events already in the inbox (a delivered-again event has no second effect) and
   timers that were cancelled or fired meanwhile. Event ids are unique per instance: the
   inbox is keyed by (instance id, event id), so the same id sent to another instance is
   another event, and no client can block another's events by using their ids first;
3. runs :func:`engine.decide.decide` for each trigger in order, chaining the snapshots of
   an instance through the batch;
4. writes the new states, history, inbox, outbox messages and timers with one set-based
   statement, and commits.

A guard, action or hook that raises leaves nothing half-applied: its trigger is left out
of the batch's writes (and the instance's later triggers in the batch are deferred). The
runtime then retries it following the transition's :class:`~engine.dsl.RetryPolicy`, and
after the last attempt marks the instance failed with the error in its history; an
operator's :meth:`Runtime.retry` re-applies the failed event.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import retries
from engine.applier import Applier, RuntimeObserver, retry_conflicts
from engine.clock import Clock, utc_now
from engine.decide import (
    ActionFailed,
)
from engine.errors import (
    InstanceNotFound,
    InvalidRequest,
)
from engine.group_commit import GroupCommit
from engine.ids import new_id
from engine.model import (
    Event,
    HistoryRecord,
    Instance,
    InstanceTrigger,
    Outcome,
    Page,
    StartResult,
    TimerFiring,
)
from engine.observability import get_logger
from engine.planning import Result
from engine.registry import Registry
from engine.retry_plan import retry_at_once
from engine.slas import sla_breached, sla_due_at, state_slas
from engine.starts import (
    PreparedStart,
    existing_start,
    new_instance,
    prepare_start,
    record_start,
    reusable,
    start_row,
)
from engine.store import key_reuse, queries
from engine.store import statements as sql
from engine.store.database import driver_connection
from engine.store.queries import InstanceFilter, instance_from_row
from engine.store.writeset import WriteSet
from engine.wire.topics import Topics

log = get_logger("conveyor.runtime")


class Runtime:
    """Starts instances and applies events and timers to them, durably."""

    def __init__(
        self,
        db: AsyncEngine,
        registry: Registry,
        *,
        topic_prefix: str = "conveyor",
        clock: Clock = utc_now,
        send_concurrency: int = 4,
        start_concurrency: int | None = None,
        read_concurrency: int | None = None,
        observer: RuntimeObserver | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.topics = Topics(topic_prefix)
        self.clock = clock
        self.observer = observer
        self.applier = Applier(db, registry, self.topics, clock, observer)
        # Group commits of their own for reads and starts (default: as many at once as
        # sends); the API runs one of each at a time (see api.app).
        self._reads: GroupCommit[uuid.UUID, Instance | None] = GroupCommit(
            self._get_many, max_batch=500, concurrency=read_concurrency or send_concurrency
        )
        self._starts: GroupCommit[PreparedStart, Instance | None] = GroupCommit(
            self._start_batch, max_batch=200, concurrency=start_concurrency or send_concurrency
        )
        # Concurrent send() calls share transactions (see engine.group_commit).
        self._group: GroupCommit[InstanceTrigger, Result] = GroupCommit(
            self._apply_grouped, max_batch=200, concurrency=send_concurrency
        )

    # ------------------------------------------------------------------ start

    async def start(
        self,
        workflow: str,
        business_key: str,
        data: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        version: int | None = None,
        source: str = "api",
        request_id: str | None = None,
        event_id: str | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> StartResult:
        """Start an instance; the same ``idempotency_key`` returns the same instance.

        ``event_id`` names what asked for the start: the worker passes the CloudEvent id,
        the HTTP API the client's Idempotency-Key. The start's history row and
        ``state_changed`` message carry it; without one, the new instance's id. Ids the
        start derives (of its timers and outbound messages) always come from the instance
        id: one event may start several workflows, one Idempotency-Key serve several.

        Raises InstanceConflict when ``business_key`` belongs to an instance from a
        different start, PayloadInvalid when ``data`` fails the data schema. If that
        instance has ended and the version started has ``key_reuse = "after_end"``, the
        new instance takes the key over instead (the old one is ``key_released``).

        ``conn``: write inside the caller's transaction on that connection, not in a
        shared group commit (a dead letter's replay; a lost race then propagates).
        """
        if not business_key:
            raise InvalidRequest("business_key must not be empty")
        definition = self.registry.get(workflow, version)
        prepared = await prepare_start(
            definition,
            business_key,
            data,
            instance_id=new_id(),
            now=self.clock(),
            idempotency_key=idempotency_key,
            event_id=event_id,
            source=source,
            request_id=request_id,
        )
        # Concurrent starts share one transaction (group commit).
        instance = (
            await self._starts.submit(prepared)
            if conn is None
            else (await self._start_batch([prepared], conn))[0]
        )
        if instance is not None:
            log.debug(
                "instance started",
                workflow=prepared.workflow,
                instance_id=str(instance.id),
                business_key=business_key,
                state=instance.state,
            )
            return StartResult(instance, created=True)
        # The business key or idempotency key is taken: the same start again, or a conflict.
        find = (prepared.workflow, business_key, idempotency_key)
        if conn is not None:
            existing = await conn.fetchrow(sql.FIND_FOR_START, *find)
        else:
            async with driver_connection(self.db) as pooled:
                existing = await pooled.fetchrow(sql.FIND_FOR_START, *find)
        if existing is not None and reusable(
            definition.spec, existing["status"], existing["start_key"], idempotency_key
        ):
            # It has ended and this version lets its key be used again: take it over.
            reused = await self._reuse_key(existing["id"], prepared, conn)
            if reused is not None:
                log.info(
                    "business key reused",
                    workflow=prepared.workflow,
                    business_key=business_key,
                    instance_id=str(reused.id),
                    released=str(existing["id"]),
                )
                return StartResult(reused, created=True)
            existing = None  # another start was first: answer as for what it started
        if existing is None:  # the other instance went away meanwhile: start afresh
            return await self.start(
                workflow,
                business_key,
                data,
                idempotency_key=idempotency_key,
                version=version,
                source=source,
                request_id=request_id,
                event_id=event_id,
                conn=conn,
            )
        return self._existing_start(existing, business_key, idempotency_key)

    async def _start_batch(
        self, starts: Sequence[PreparedStart], conn: asyncpg.Connection | None = None
    ) -> list[Instance | None]:
        """Insert many new instances, their history, outbox messages and timers, in one
        statement (so one round trip and no explicit transaction); None where a key was
        taken."""
        instances = [new_instance(p) for p in starts]
        rows = [start_row(p) for p in starts]
        writes = WriteSet(self.clock(), self.topics)
        for p, instance in zip(starts, instances, strict=True):
            record_start(writes, instance, p)

        async def insert() -> list[Instance | None]:
            write_started = time.perf_counter()
            if conn is not None:
                result = await writes.write_starts(conn, rows)
            else:
                async with driver_connection(self.db) as pooled:
                    result = await writes.write_starts(pooled, rows)
            if self.observer is not None:
                # The starts' decisions were made by their callers, before queueing.
                self.observer.transaction(
                    triggers=len(starts),
                    decide_seconds=0.0,
                    commit_seconds=time.perf_counter() - write_started,
                )
            created = set(result["changed"]) if result is not None else set()
            return [i if i.id in created else None for i in instances]

        return await (insert() if conn is not None else retry_conflicts(insert))

    async def _reuse_key(
        self, ended: uuid.UUID, prepared: PreparedStart, conn: asyncpg.Connection | None
    ) -> Instance | None:
        """In one transaction, take the key of the ended instance ``ended`` over (mark it
        ``key_released``) and insert the new instance: None (nothing written) when another
        start was first, having taken the key or the idempotency key."""

        async def take_over(conn: asyncpg.Connection) -> Instance | None:
            try:
                async with conn.transaction():  # a savepoint inside the caller's transaction
                    if not await key_reuse.release_key(conn, ended):
                        return None
                    (instance,) = await self._start_batch([prepared], conn)
                    if instance is None:
                        raise _LostRace
                    return instance
            except _LostRace:
                return None

        if conn is not None:
            return await take_over(conn)

        async def pooled() -> Instance | None:
            async with driver_connection(self.db) as conn:
                return await take_over(conn)

        return await retry_conflicts(pooled)

    @staticmethod
    def _existing_start(
        row: asyncpg.Record, business_key: str, idempotency_key: str | None
    ) -> StartResult:
        return existing_start(
            instance_from_row(row), row["start_key"], business_key, idempotency_key
        )

    # ------------------------------------------------------------------ events

    async def send(self, event: Event) -> Outcome:
        """Apply one event, retrying a failing action per its policy.

        Concurrent calls are committed together (group commit); each gets its own outcome.
        """
        result = await self._group.submit(event)
        if result.outcome.status == "deferred" and result.failure is None:
            # Its instance was busy (or an earlier event of it failed in the batch):
            # apply it alone, waiting for the lock.
            (result,) = await self._apply([event])
        if result.failure is None:
            return result.outcome
        return await self._retry_failed(event, result.failure)

    async def send_many(self, events: Sequence[Event]) -> list[Outcome]:
        """Apply many events (for many instances) in one transaction, in order per instance.

        Events whose action raised, and the later events of the same instance, are then
        applied one by one with their retry policy, so a failing instance never holds up
        the others and never loses the order of its own events.
        """
        return await self._apply_all(events)

    async def fire_timers(self, firings: Sequence[TimerFiring]) -> list[Outcome]:
        """Fire due timers through the same path as events; the timer id is the event id.

        A retry timer (:data:`engine.retries.RETRY_TIMER`) resumes its retrying instance:
        the failed trigger's next attempt, then the events parked behind it.
        """
        due = [f for f in firings if f.name != retries.RETRY_TIMER]
        outcomes = dict(zip(due, await self._apply_all(due), strict=True)) if due else {}
        for firing in firings:
            if firing.name == retries.RETRY_TIMER:
                outcomes[firing] = await retry_conflicts(
                    partial(retries.fire, self.applier, firing)
                )
        return [outcomes[f] for f in firings]

    async def _apply_all(self, triggers: Sequence[InstanceTrigger]) -> list[Outcome]:
        """One transaction for the batch, then, in order, its failed and deferred triggers
        one by one (waiting for busy instances; retrying failed actions)."""
        results = await self._apply(triggers, wait=len(triggers) == 1)
        outcomes = [r.outcome for r in results]
        for index, result in enumerate(results):
            if result.outcome.status not in ("failed", "deferred"):
                continue
            if result.failure is None:
                (result,) = await self._apply([triggers[index]])
            outcomes[index] = (
                result.outcome
                if result.failure is None
                else await self._retry_failed(triggers[index], result.failure)
            )
        return outcomes

    async def _retry_failed(self, trigger: InstanceTrigger, failure: ActionFailed) -> Outcome:
        """Retry a failed trigger at once while its policy's backoff is zero; then let the
        instance wait as ``retrying`` for a timer (nobody sleeps), or fail it after the
        last attempt (:mod:`engine.retries`)."""
        attempt = 1
        while retry_at_once(failure, attempt):
            attempt += 1
            (result,) = await self._apply([trigger])
            if result.failure is None:
                return result.outcome
            failure = result.failure
        return await retry_conflicts(
            partial(retries.schedule, self.applier, trigger, failure, attempt)
        )

    # ------------------------------------------------------------------ the batch

    async def _apply_grouped(self, triggers: Sequence[InstanceTrigger]) -> list[Result]:
        """A group-commit batch: busy instances are skipped (their callers retry alone)."""
        return await self.applier.apply(triggers, wait=len(triggers) == 1)

    async def _apply(
        self, triggers: Sequence[InstanceTrigger], *, wait: bool = True
    ) -> list[Result]:
        return await self.applier.apply(triggers, wait=wait)

    # ------------------------------------------------------------------ queries

    async def get(self, instance_id: uuid.UUID) -> Instance:
        """One instance by id. Concurrent calls share one query (group read)."""
        instance = await self._reads.submit(instance_id)
        if instance is None:
            raise InstanceNotFound(f"no instance {instance_id}")
        return instance

    async def _get_many(self, ids: Sequence[uuid.UUID]) -> list[Instance | None]:
        return await queries.get_many(self.db, ids)

    async def find(self, workflow: str, business_key: str) -> Instance:
        """The instance of ``workflow`` with ``business_key``."""
        return await queries.find(self.db, workflow, business_key)

    async def find_with_earlier(
        self, workflow: str, business_key: str, *, limit: int = 20
    ) -> tuple[Instance, list[Instance]]:
        """The instance of ``workflow`` with ``business_key``, and up to ``limit`` earlier
        instances that gave the key up to a newer one (key reuse), newest first."""
        return await key_reuse.find_with_earlier(self.db, workflow, business_key, limit=limit)

    async def history(
        self, instance_id: uuid.UUID, *, after: int = 0, limit: int = 100
    ) -> list[HistoryRecord]:
        """An instance's history in order; ``after`` is the last id already seen."""
        return await queries.history(self.db, instance_id, after=after, limit=limit)

    async def list_instances(
        self, filters: InstanceFilter, *, limit: int = 50, cursor: str | None = None
    ) -> Page:
        """Instances matching ``filters``, newest first, by keyset pagination."""
        return await queries.list_instances(
            self.db,
            filters,
            now=self.clock(),
            slas=tuple(state_slas(self.registry, filters.workflow)),
            limit=limit,
            cursor=cursor,
        )

    def instance_json(self, instance: Instance) -> dict[str, Any]:
        """``instance`` as the API shows it, with its SLA deadline and whether it is late
        (now, by this runtime's clock)."""
        due = sla_due_at(self.registry, instance)
        return instance.to_json(due, sla_breached(due, self.clock()))


class _LostRace(Exception):
    """Another start took the idempotency key while this one took a business key over:
    roll the take-over back."""


__all__ = ["Clock", "InstanceFilter", "Runtime", "RuntimeObserver", "utc_now"]
