"""Durable timers: claim due timers and fire them through the runtime.

Several schedulers (one per worker) share the ``timers`` table safely: each claims a batch
with ``FOR UPDATE SKIP LOCKED`` and a lease (``claimed_until``), so a timer is handed to one
scheduler at a time, and a crashed scheduler's claims become claimable again when the
lease runs out. Firing goes through the same path as events with the timer's id as the
event id, so even a timer fired twice takes effect once. Timers live in PostgreSQL, so
they survive restarts; overdue timers fire on the first poll after start-up.

A backlog (a claim came back full: many timers due at once) is drained by ``lanes``
claim-and-fire loops at a time, each claiming its own batch (``SKIP LOCKED`` keeps them
apart as it keeps schedulers apart) and firing it in one transaction: while one lane's
batch is planned in Python, another's is written by PostgreSQL. A lane stops when its
claim comes back short; the scheduler then polls as before. An idle scheduler whose next
timer comes due before its next poll wakes when it does, not up to a poll interval late.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from engine.liveness import DatabaseOutage
from engine.model import Outcome, TimerFiring
from engine.observability import get_logger
from engine.polling import poll
from engine.runtime import Runtime
from engine.store import statements as sql
from engine.store.database import driver_connection, driver_transaction

log = get_logger("conveyor.scheduler")


class TimerScheduler:
    """Fires due timers until stopped."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        batch_size: int = 1000,
        lanes: int = 4,
        lease: timedelta = timedelta(seconds=60),
        poll_interval: float = 1.0,
        retry_max: float = 2.0,
        outage: DatabaseOutage | None = None,
    ) -> None:
        self.runtime = runtime
        self.retry_max = retry_max
        self.outage = outage or DatabaseOutage(float("inf"))
        if batch_size < 1 or lanes < 1:
            raise ValueError("batch_size and lanes must be at least 1")
        self.batch_size = batch_size
        self.lanes = lanes
        self.lease = lease
        self.poll_interval = poll_interval
        self.fired = 0

    async def claim(self) -> list[TimerFiring]:
        """Claim up to ``batch_size`` due timers for this scheduler (committed lease)."""
        now = self.runtime.clock()
        async with driver_transaction(self.runtime.db) as conn:
            rows = await conn.fetch(sql.CLAIM_DUE_TIMERS, now, self.batch_size, now + self.lease)
        rows = sorted(rows, key=lambda r: (r["due_at"], r["id"]))
        return [TimerFiring(r["id"], r["instance_id"], r["name"], r["state"]) for r in rows]

    async def fire_due(self) -> list[Outcome]:
        """Claim and fire one batch of due timers; return what each did."""
        firings = await self.claim()
        if not firings:
            return []
        outcomes = await self.runtime.fire_timers(firings)
        applied = sum(1 for o in outcomes if o.status == "applied")
        self.fired += applied
        log.info("timers fired", claimed=len(firings), applied=applied)
        return outcomes

    async def next_due_in(self) -> float | None:
        """Seconds until the next timer that is not due yet comes due (None: no such timer)."""
        now = self.runtime.clock()
        async with driver_connection(self.runtime.db) as conn:
            due = await conn.fetchval(sql.NEXT_TIMER_DUE, now)
        return None if due is None else max((due - now).total_seconds(), 0.0)

    async def drain(self, stop: asyncio.Event) -> None:
        """Fire a backlog with ``lanes`` claim-and-fire loops at once, until each lane's
        claim comes back short (or ``stop`` is set). A lane that fails raises its error
        once the other lanes have finished the batch they hold (none is cancelled inside
        its transaction); the failed lane's claims wait for their lease, as after a crash.
        """
        errors: list[Exception] = []

        async def lane() -> None:
            try:
                while not (stop.is_set() or errors):
                    if len(await self.fire_due()) < self.batch_size:
                        return
            except Exception as exc:  # the poll loop logs it and retries with backoff
                errors.append(exc)

        await asyncio.gather(*(lane() for _ in range(self.lanes)))
        if errors:
            raise errors[0]

    async def run(self, stop: asyncio.Event) -> None:
        """Fire due timers until ``stop`` is set; poll every ``poll_interval`` when idle."""
        log.info("timer scheduler started", batch_size=self.batch_size, lanes=self.lanes)

        async def round_() -> bool:
            if len(await self.fire_due()) >= self.batch_size:
                await self.drain(stop)  # a full batch: more may be due now, fire them in lanes
                return True
            wait = await self.next_due_in()
            if wait is None or wait >= self.poll_interval:
                return False  # the poll loop waits its interval
            with contextlib.suppress(TimeoutError):  # wake when the next timer is due
                await asyncio.wait_for(stop.wait(), max(wait, 0.01))
            return True

        await poll(
            round_,
            stop,
            name="timer scheduler",
            poll_interval=self.poll_interval,
            retry_max=self.retry_max,
            outage=self.outage,
        )
        log.info("timer scheduler stopped", fired=self.fired)
