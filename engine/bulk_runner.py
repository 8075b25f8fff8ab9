"""Applying jobs (bulk actions, and migrations: :mod:`engine.migrate`): a batch of items per
transaction, shared safely by many runners.

A batch claims pending items (``FOR UPDATE SKIP LOCKED``: another runner's batch is
skipped, not waited for), locks their instances in id order, applies the action to each,
and settles the items and the job's counters, all in one transaction. A crash (kill -9)
loses an uncommitted batch whole: its items are still pending and the next runner applies
them; a committed batch is never applied again. So every instance gets the action at most
once, and, once a runner finishes the job, exactly once.

Before it applies anything, a batch checks the job's filter again against the instances
it has locked: one that moved on since the job was created (an order paid meanwhile) no
longer matches and is skipped, not acted on.

Per item: ``cancel`` and ``retry`` run in a savepoint, so that one instance whose action
raises is marked failed (with the error) and the batch goes on. A transient error (the
database went away, a deadlock) aborts the batch instead, which is then run again.
``send_event`` applies the batch's events together (the event id
``bulk:<job>:<instance>`` makes a redo a duplicate); an event whose action raised goes
through its transition's retry policy in the same transaction (retried at once while the
backoff is zero, then left ``retrying`` for a timer, or ``failed``), so its item is
settled with what that did while its instance and item are still locked: no other runner
can claim the item in between.

Every worker runs a :class:`JobRunner` service; ``conveyor instances cancel|retry`` runs
the same batches for its job while it shows the progress.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import asyncpg

from engine import bulk, migrate, operations, retries
from engine.applier import retry_conflicts
from engine.errors import InvalidState
from engine.liveness import DatabaseOutage
from engine.model import Event, Instance, Outcome
from engine.observability import get_logger
from engine.planning import Result
from engine.polling import poll
from engine.runtime import Runtime
from engine.store import jobs
from engine.store import statements as sql
from engine.store.database import driver_transaction
from engine.store.jobs import Job, Settled
from engine.store.queries import instance_from_row
from engine.transient import is_transient

log = get_logger("conveyor.bulk")

BATCH_SIZE = 200
"""Items per transaction."""

KINDS = (bulk.KIND, migrate.KIND)
"""The jobs this runner applies: bulk actions and workflow migrations (:mod:`engine.migrate`)."""

GONE = "the instance no longer exists"

MAX_BATCH_ERRORS = 3
"""Batches of one job in a row that may fail with a non-transient error (not an item's:
those are caught per item) before this runner marks the job failed, with the error."""


def event_id(job_id: uuid.UUID, instance_id: uuid.UUID) -> str:
    """The id of the event a ``send_event`` job sends to an instance (once in effect)."""
    return f"bulk:{job_id}:{instance_id}"


class JobRunner:
    """Applies running bulk jobs, batch by batch, until stopped."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        batch_size: int = BATCH_SIZE,
        poll_interval: float = 1.0,
        retry_max: float = 5.0,
        outage: DatabaseOutage | None = None,
    ) -> None:
        self.runtime = runtime
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_max = retry_max
        self.outage = outage or DatabaseOutage(float("inf"))
        self.applied = 0
        self.batch_errors: dict[uuid.UUID, int] = {}

    # ------------------------------------------------------------------ the service

    async def run(self, stop: asyncio.Event) -> None:
        """Apply running jobs until ``stop`` is set; poll every ``poll_interval`` when idle.
        Survives database outages (backing off), like the other services."""
        log.info("bulk job runner started")

        async def round_() -> bool:
            return bool(await self.run_pending(stop))

        await poll(
            round_,
            stop,
            name="bulk job",
            poll_interval=self.poll_interval,
            retry_max=self.retry_max,
            outage=self.outage,
        )
        log.info("bulk job runner stopped", applied=self.applied)

    async def run_pending(self, stop: asyncio.Event | None = None) -> int:
        """Run every running job until it has no item left to claim; the items done."""
        done = 0
        for kind in KINDS:
            for job_id in await jobs.running(self.runtime.db, kind, limit=20):
                if stop is not None and stop.is_set():
                    break
                done += await self.run_job(job_id, stop)
        return done

    async def run_job(self, job_id: uuid.UUID, stop: asyncio.Event | None = None) -> int:
        """Apply batches of the job until none is left to claim (or ``stop``); the items
        this runner settled."""
        job = await jobs.get(self.runtime.db, job_id)
        done = 0
        while job is not None and job.kind in KINDS and job.status == "running":
            if stop is not None and stop.is_set():
                break
            claimed = await self.run_batch_or_give_up(job)
            done += claimed
            if not claimed:
                break
        return done

    async def run_batch_or_give_up(self, job: Job) -> int:
        """:meth:`run_batch`, counting a batch that fails for a reason of its own (the
        error is raised again: the batch may be run again); at :data:`MAX_BATCH_ERRORS`
        in a row the job is marked failed instead, and 0 is returned."""
        try:
            claimed = await self.run_batch(job)
        except Exception as exc:
            if is_transient(exc) or not await self._gave_up(job, exc):
                raise
            return 0
        self.batch_errors.pop(job.id, None)
        return claimed

    async def _gave_up(self, job: Job, exc: Exception) -> bool:
        """Count a batch that failed for a reason of its own; at :data:`MAX_BATCH_ERRORS`
        in a row mark the job failed (its pending items stay pending) and say so."""
        errors = self.batch_errors.get(job.id, 0) + 1
        self.batch_errors[job.id] = errors
        if errors < MAX_BATCH_ERRORS:
            return False
        self.batch_errors.pop(job.id, None)
        error = {"error": f"{type(exc).__name__}: {exc}"[:2000], "batches_failed": errors}
        async with driver_transaction(self.runtime.db) as conn:
            await jobs.fail(conn, job.id, error, self.runtime.clock())
        log.error("job failed", job_id=str(job.id), kind=job.kind, exc_info=exc, **error)
        return True

    # ------------------------------------------------------------------ one batch

    async def run_batch(self, job: Job) -> int:
        """Claim, apply and settle one batch of ``job`` (run again if it loses a race);
        completes the job when nothing is pending. Returns the items claimed."""

        async def once() -> int:
            async with driver_transaction(self.runtime.db) as conn:
                ids = await jobs.claim(conn, job.id, self.batch_size)
                now = self.runtime.clock()
                if not ids:
                    if await jobs.complete_if_done(conn, job.id, now):
                        log.info(
                            "job completed", job_id=str(job.id), kind=job.kind, action=job.action
                        )
                    return 0
                if job.kind == migrate.KIND:
                    settled = await migrate.apply_batch(self.runtime, conn, job, ids)
                elif job.action == "send_event":
                    settled = await self._send_events(conn, job, ids)
                else:
                    settled = await self._each(conn, job, ids)
                await jobs.settle(conn, job.id, settled, now)
            return len(ids)

        claimed = await retry_conflicts(once)
        self.applied += claimed
        return claimed

    async def _lock_targets(
        self, conn: asyncpg.Connection, job: Job, ids: Sequence[uuid.UUID]
    ) -> tuple[list[Instance], list[Settled]]:
        """Lock the claimed items' instances (in id order) and check the job's filter
        against them again: those gone or no longer matching are skipped; the others,
        in claim order, are the batch's targets."""
        rows = await conn.fetch(sql.LOCK_INSTANCES, sorted(ids))
        found = {r["id"]: instance_from_row(r) for r in rows}
        matching = await bulk.still_matching(self.runtime, conn, job, list(found))
        targets: list[Instance] = []
        settled: list[Settled] = []
        for instance_id in ids:
            instance = found.get(instance_id)
            if instance is None:
                settled.append(Settled(instance_id, "skipped", GONE))
            elif instance_id not in matching:
                settled.append(Settled(instance_id, "skipped", bulk.NO_LONGER_MATCHES))
            else:
                targets.append(instance)
        return targets, settled

    async def _each(
        self, conn: asyncpg.Connection, job: Job, ids: Sequence[uuid.UUID]
    ) -> list[Settled]:
        targets, settled = await self._lock_targets(conn, job, ids)
        return settled + [await self._apply_one(conn, job, i) for i in targets]

    async def _apply_one(self, conn: asyncpg.Connection, job: Job, instance: Instance) -> Settled:
        """Cancel or retry one locked instance in a savepoint."""
        try:
            async with conn.transaction():
                if job.action == "cancel":
                    return await self._cancel(conn, job, instance)
                return await self._retry(conn, job, instance)
        except InvalidState as exc:
            return Settled(instance.id, "skipped", str(exc))
        except Exception as exc:
            if is_transient(exc):
                raise  # the whole batch is run again
            log.warning(
                "bulk action failed for an instance",
                job_id=str(job.id),
                instance_id=str(instance.id),
                error=f"{type(exc).__name__}: {exc}",
            )
            return Settled(instance.id, "failed", f"{type(exc).__name__}: {exc}"[:2000])

    async def _cancel(self, conn: asyncpg.Connection, job: Job, instance: Instance) -> Settled:
        cancelled = await operations.cancel_locked(
            self.runtime,
            conn,
            instance,
            reason=str(job.spec.get("reason", "")),
            request_id=job.request_id,
            status_only=bool(job.spec.get("status_only", False)),
        )
        if cancelled.mode == "already":
            return Settled(instance.id, "skipped", "already cancelled")
        how = f"transition {cancelled.transition}" if cancelled.transition else cancelled.mode
        return Settled(instance.id, "succeeded", f"cancelled ({how})")

    async def _retry(self, conn: asyncpg.Connection, job: Job, instance: Instance) -> Settled:
        outcome = await operations.retry_locked(
            self.runtime, conn, instance, request_id=job.request_id
        )
        if outcome.status in ("failed", "retrying"):
            return Settled(
                instance.id,
                "failed",
                f"retried; the step failed again (now {outcome.status}): {outcome.error}",
            )
        return Settled(instance.id, "succeeded", f"retried ({outcome.status})")

    # ------------------------------------------------------------------ send_event

    def _event(self, job: Job, instance_id: uuid.UUID) -> Event:
        event = job.spec["event"]
        return Event(
            type=event["type"],
            event_id=event_id(job.id, instance_id),
            payload=event.get("payload") or {},
            instance_id=instance_id,
            source="operator",
            request_id=job.request_id,
        )

    async def _send_events(
        self, conn: asyncpg.Connection, job: Job, ids: Sequence[uuid.UUID]
    ) -> list[Settled]:
        """Apply the batch's events together. When the batch raises (not an action:
        something like a workflow version no longer deployed), the events are applied one
        by one, each in a savepoint, and the one that raises is failed. An event whose
        action raised goes through its retry policy here, in this transaction: its
        instance and its item stay locked until the item is settled with the outcome."""
        targets, settled = await self._lock_targets(conn, job, ids)
        events = [self._event(job, i.id) for i in sorted(targets, key=lambda i: i.id)]
        if not events:
            return settled
        try:
            async with conn.transaction():
                results = await self.runtime.applier.apply_locked(conn, events)
        except Exception as exc:
            if is_transient(exc):
                raise
            return settled + [await self._send_one(conn, event) for event in events]
        return settled + [
            await self._settle_result(conn, event, result)
            for event, result in zip(events, results, strict=True)
        ]

    async def _send_one(self, conn: asyncpg.Connection, event: Event) -> Settled:
        try:
            result = await self._attempt(conn, event)
        except Exception as exc:
            if is_transient(exc):
                raise
            return _failed(event, exc)
        return await self._settle_result(conn, event, result)

    async def _settle_result(
        self, conn: asyncpg.Connection, event: Event, result: Result
    ) -> Settled:
        assert event.instance_id is not None
        if result.failure is None and result.outcome.status not in ("failed", "deferred"):
            return _settled_event(event.instance_id, result.outcome)
        try:
            outcome = await self._retry_locked(conn, event, result)
        except Exception as exc:
            if is_transient(exc):
                raise
            return _failed(event, exc)
        return _settled_event(event.instance_id, outcome)

    async def _retry_locked(
        self, conn: asyncpg.Connection, event: Event, result: Result
    ) -> Outcome:
        """An event whose action raised, as the runtime's path treats it (tried again at
        once while its retry policy's backoff is zero, then ``retrying`` with a timer, or
        ``failed`` after the last attempt), but in the batch's transaction."""
        if result.failure is None:
            result = await self._attempt(conn, event)
            if result.failure is None:
                return result.outcome
        failure, attempt = result.failure, 1
        while attempt < failure.retry.attempts and not failure.retry.backoff(attempt):
            attempt += 1
            result = await self._attempt(conn, event)
            if result.failure is None:
                return result.outcome
            failure = result.failure
        async with conn.transaction():
            return await retries.schedule_locked(
                self.runtime.applier, conn, event, failure, attempt
            )

    async def _attempt(self, conn: asyncpg.Connection, event: Event) -> Result:
        """One attempt at the event, in a savepoint (an action that raises writes nothing)."""
        async with conn.transaction():
            (result,) = await self.runtime.applier.apply_locked(conn, [event])
        return result


def _failed(event: Event, exc: Exception) -> Settled:
    assert event.instance_id is not None
    return Settled(event.instance_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])


def _settled_event(instance_id: uuid.UUID, outcome: Outcome) -> Settled:
    status = outcome.status
    if status == "applied":
        return Settled(instance_id, "succeeded", None)
    if status == "duplicate":
        return Settled(instance_id, "succeeded", "already applied")
    if status == "parked":
        return Settled(instance_id, "succeeded", "parked behind the instance's retry")
    if status == "rejected":
        message = outcome.rejection.message if outcome.rejection else outcome.error
        return Settled(instance_id, "skipped", message or "rejected")
    if status == "not_found":
        return Settled(instance_id, "skipped", GONE)
    if status == "retrying":
        return Settled(
            instance_id,
            "failed",
            f"action failed: {outcome.error}; the instance is retrying (its retry policy "
            "applies the event again)",
        )
    return Settled(instance_id, "failed", f"{status}: {outcome.error}")


__all__ = ["BATCH_SIZE", "JobRunner", "event_id"]
