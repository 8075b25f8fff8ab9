"""Delivering one consumed batch to the runtime, and a verdict for each of its messages.

The consumer routes a batch's messages (:mod:`engine.messaging.routing`) and hands the
result here. The deliveries are split into lanes of whole partitions that run at the same
time; within a lane the starts run (concurrently across business keys, in order within
one) beside the events of other instances, which go in one ``Runtime.send_many``
transaction, and events for an instance started in the batch wait for its start. Each
delivery's outcome becomes a verdict, and a message none of whose deliveries took effect
becomes a dead letter. Transient errors propagate: the consumer retries the whole batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

import asyncpg

from engine.errors import InstanceConflict, PayloadInvalid, UnknownWorkflow
from engine.messaging.deadletter import DeadLetter, subject_of
from engine.messaging.fetched import Record
from engine.messaging.metrics import WorkerMetrics
from engine.messaging.routing import (
    Routed,
    StartCommand,
    Unroutable,
    apart_from_starts,
    group_starts,
    starts_first,
)
from engine.model import Event, Outcome, StartResult
from engine.observability import get_logger
from engine.runtime import Runtime
from engine.transient import CONFLICT_ERRORS, is_transient

log = get_logger("conveyor.consumer")


class BatchDelivery:
    """Applies routed batches through the runtime, counting outcomes in the metrics."""

    def __init__(
        self, runtime: Runtime, metrics: WorkerMetrics, *, lanes: int, start_concurrency: int
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.lanes = lanes  # groups of partitions applied concurrently (one transaction each)
        self.start_concurrency = start_concurrency  # starts in flight per lane

    async def deliver(
        self, records: Sequence[Record], routed: Sequence[Routed | Unroutable]
    ) -> list[DeadLetter]:
        """Apply the batch; return the dead letters (in record order)."""
        started = time.perf_counter()
        # Per message: None = took effect (or was a duplicate); else why it is dead.
        verdicts: list[list[Unroutable | None]] = [[] for _ in records]
        indexed: list[tuple[int, StartCommand | Event]] = []
        for index, result in enumerate(routed):
            if isinstance(result, Unroutable):
                verdicts[index].append(result)
            else:
                indexed.extend((index, d) for d in result.deliveries)
        lanes = self._lanes(records, indexed)
        if len(lanes) == 1:
            await self._apply_lane(lanes[0], verdicts)
        else:
            await _all(self._apply_lane(lane, verdicts) for lane in lanes)
        letters: list[DeadLetter] = []
        for record, result, verdict in zip(records, routed, verdicts, strict=True):
            # A message is dead when none of its deliveries took effect.
            if verdict and all(v is not None for v in verdict):
                first = verdict[0]
                assert first is not None
                letters.append(
                    DeadLetter.of(record, first.reason, first.detail, subject_of(record, result))
                )
        self.metrics.batch_applied(len(records), time.perf_counter() - started)
        return letters

    def _lanes(
        self, records: Sequence[Record], indexed: Sequence[tuple[int, StartCommand | Event]]
    ) -> list[list[tuple[int, StartCommand | Event]]]:
        """Split the deliveries into up to ``lanes`` groups of whole partitions.

        A business key lives in one partition, so lanes touch disjoint instances and can run
        at the same time (one overlaps its database round trips with another's decisions)
        while each keeps its partitions' order.
        """
        partitions = sorted({(r.topic, r.partition) for r in records})
        lane_of = {tp: i % self.lanes for i, tp in enumerate(partitions)}
        lanes: dict[int, list[tuple[int, StartCommand | Event]]] = {}
        for index, delivery in indexed:
            record = records[index]
            lanes.setdefault(lane_of[(record.topic, record.partition)], []).append(
                (index, delivery)
            )
        return list(lanes.values()) or [[]]

    async def _apply_lane(
        self,
        lane: Sequence[tuple[int, StartCommand | Event]],
        verdicts: list[list[Unroutable | None]],
    ) -> None:
        starts, events = starts_first(lane)
        if not starts:
            if events:
                await self._apply_events(events, verdicts)
            return
        # Starts and the events of other instances go to the database side by side; only
        # events for an instance started in this batch wait for its start.
        alongside, after = apart_from_starts(starts, events)
        if alongside:
            await _all(
                [self._apply_starts(starts, verdicts), self._apply_events(alongside, verdicts)]
            )
        else:
            await self._apply_starts(starts, verdicts)
        if after:
            await self._apply_events(after, verdicts)

    async def _apply_starts(
        self,
        starts: Sequence[tuple[int, StartCommand]],
        verdicts: list[list[Unroutable | None]],
    ) -> None:
        limit = asyncio.Semaphore(self.start_concurrency)

        async def run_group(group: Sequence[tuple[int, StartCommand]]) -> None:
            async with limit:
                for index, start in group:
                    verdicts[index].append(await self._start(start))

        await _all(run_group(group) for group in group_starts(starts))

    async def _start(self, start: StartCommand) -> Unroutable | None:
        result = await apply_start(self.runtime, start)
        if isinstance(result, Unroutable):
            return result
        instance = result.instance
        if result.created:
            self.metrics.started += 1
        else:
            self.metrics.duplicates += 1
        outcome = "started" if result.created else "duplicate"
        self.metrics.transitions[(instance.workflow, instance.version, outcome)] += 1
        return None

    async def _apply_events(
        self, events: Sequence[tuple[int, Event]], verdicts: list[list[Unroutable | None]]
    ) -> None:
        batch = [event for _, event in events]
        outcomes: list[Outcome | Unroutable]
        try:
            outcomes = list(await self.runtime.send_many(batch))
        except Exception as exc:
            if is_transient(exc):
                raise
            # A bug or a broken definition somewhere in the batch: find the event(s) one by
            # one, so that one poison event cannot stop the partition.
            log.exception("batch apply failed; applying its events one by one")
            outcomes = [await self._send_one(event) for event in batch]
        for (index, event), outcome in zip(events, outcomes, strict=True):
            verdicts[index].append(self._verdict(outcome, event))

    async def _send_one(self, event: Event) -> Outcome | Unroutable:
        try:
            return await self.runtime.send(event)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.exception("event cannot be applied", event_id=event.event_id)
            return Unroutable("processing_error", f"{type(exc).__name__}: {exc}")

    def _verdict(self, outcome: Outcome | Unroutable, event: Event) -> Unroutable | None:
        if isinstance(outcome, Unroutable):
            return outcome
        status = outcome.status
        metrics = self.metrics
        instance = outcome.instance
        if instance is not None:
            metrics.transitions[(instance.workflow, instance.version, status)] += 1
        else:
            metrics.transitions[(event.workflow or "", 0, status)] += 1
        if status == "applied":
            metrics.applied += 1
        elif status == "duplicate":
            metrics.duplicates += 1
        elif status == "rejected":
            metrics.rejected += 1
        elif status == "failed":
            metrics.failed += 1
        elif status == "retrying":
            metrics.retrying += 1  # the instance waits for its retry timer; not dead
        elif status == "parked":
            metrics.parked += 1  # applied after the instance's retry, in order
        elif status == "stale":
            metrics.stale += 1
        return outcome_verdict(outcome)


async def apply_start(
    runtime: Runtime,
    start: StartCommand,
    *,
    source: str = "kafka",
    request_id: str | None = None,
    conn: asyncpg.Connection | None = None,
) -> StartResult | Unroutable:
    """Run a routed start: what it started, or why its message is dead. Transient errors
    propagate (the caller retries). The worker and a dead letter's replay share it (the
    replay in its own transaction: ``conn``)."""
    try:
        return await runtime.start(
            start.workflow,
            start.business_key,
            start.data,
            idempotency_key=start.idempotency_key,
            source=source,
            request_id=request_id,
            # The CloudEvent id (which routing also made the idempotency key): the
            # start's history row and state_changed message carry it.
            event_id=start.idempotency_key,
            conn=conn,
        )
    except PayloadInvalid as exc:
        fields = "; ".join(f"{f.path}: {f.message}" for f in exc.field_errors)
        return Unroutable("invalid_payload", f"{exc}{' (' + fields + ')' if fields else ''}")
    except InstanceConflict as exc:
        return Unroutable("instance_conflict", str(exc))
    except UnknownWorkflow as exc:
        return Unroutable("unknown_type", str(exc))
    except Exception as exc:
        if is_transient(exc) or (conn is not None and isinstance(exc, CONFLICT_ERRORS)):
            raise  # in the caller's transaction a lost race is the caller's to run again
        log.exception("start cannot be applied", idempotency_key=start.idempotency_key)
        return Unroutable("processing_error", f"{type(exc).__name__}: {exc}")


def outcome_verdict(outcome: Outcome) -> Unroutable | None:
    """Whether an event's outcome leaves its message dead, and why: a payload that fails
    its schema, an instance whose definition is not loaded (orphaned), or no instance to
    apply it to. Anything else took effect or is kept by the runtime (applied, a
    duplicate, refused in this state and recorded in history, retrying, parked, failed, a
    stale timer). The worker and a dead letter's replay share it."""
    rejection = outcome.rejection
    if outcome.status == "rejected" and rejection is not None:
        if rejection.reason == "invalid_payload":
            return Unroutable("invalid_payload", rejection.message)
        if rejection.reason == "orphaned":
            return Unroutable("orphaned", rejection.message)
    elif outcome.status == "not_found":
        return Unroutable(
            "no_instance",
            f"event {outcome.event_id}: no instance for it, and its type starts no workflow",
        )
    return None


async def _all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run concurrently; on a failure cancel the rest and raise the first error itself."""
    try:
        async with asyncio.TaskGroup() as tasks:
            for coroutine in coroutines:
                tasks.create_task(coroutine)
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from failures


__all__ = ["BatchDelivery", "apply_start", "outcome_verdict"]
