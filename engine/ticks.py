"""When a schedule is due: its ticks, and which to fire after a pause (pure).

A cron expression reads the zone's wall clock: the wall-clock times it names are walked
day by day (each once), and each is turned into an instant the way Python reads a local
time (PEP 495, ``fold=0``):

* a wall time that does not exist (the hour skipped when clocks go forward) is read with
  the offset in force before the jump: 02:30 on the day Berlin goes from 02:00 to 03:00
  is 03:30 summer time;
* a wall time that comes twice (the hour repeated when clocks go back) is its first
  occurrence, in summer time, and fires once.

Two wall times that land on the same instant (02:30 and 03:30 on a spring-forward day for
an hourly ``30 * * * *``) are one tick. An interval schedule ticks at whole multiples of
``every`` since its ``anchor``, in UTC, whatever the zone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

from engine.schedules import ScheduleSpec

MISFIRE_GRACE = timedelta(seconds=60)
"""A tick fired within this time after it is due is on time; an older one was missed
(the schedule's ``missed`` policy decides about it)."""


def ticks_after(spec: ScheduleSpec, after: datetime) -> Iterator[datetime]:
    """The schedule's ticks strictly after ``after``, in order, as UTC instants."""
    after = after.astimezone(UTC)
    if spec.every is not None:
        steps = (after - spec.anchor) // spec.every + 1
        tick = spec.anchor + steps * spec.every
        while True:
            yield tick
            tick += spec.every
    assert spec.cron is not None
    # Walk the wall clock from a little before `after` (an earlier wall time can be a
    # later instant around a jump), keeping each instant once and in order.
    start = (after - timedelta(hours=3)).astimezone(spec.zone).replace(tzinfo=None)
    walk = croniter(spec.cron, start)
    last = after
    while True:
        wall: datetime = walk.get_next(datetime)
        tick = wall.replace(tzinfo=spec.zone, fold=0).astimezone(UTC)
        if tick > last:
            last = tick
            yield tick


def next_tick(spec: ScheduleSpec, after: datetime) -> datetime:
    """The first tick strictly after ``after``."""
    return next(ticks_after(spec, after))


@dataclass(frozen=True, slots=True)
class Due:
    """What to do at ``now`` for a schedule whose next tick was ``due_at``."""

    fire: tuple[datetime, ...]
    """The ticks to fire now, in order."""
    skipped: tuple[datetime, ...]
    """Missed ticks the policy passes over (at most ``max_catch_up`` are listed)."""
    skipped_count: int
    """How many were passed over (all of them, also beyond the listed ones)."""
    next_tick: datetime
    """The first tick after ``now``: the schedule's new ``next_tick``."""


def due(spec: ScheduleSpec, due_at: datetime, now: datetime) -> Due:
    """The ticks from ``due_at`` up to ``now`` and what the ``missed`` policy makes of
    them: on-time ticks (within :data:`MISFIRE_GRACE`) always fire; of the missed ones,
    ``latest`` fires the last, ``all`` fires the last ``max_catch_up`` in order, ``skip``
    none."""
    now = now.astimezone(UTC)
    if due_at > now:
        return Due((), (), 0, due_at)
    missed: list[datetime] = []  # the last max_catch_up missed ticks, in order
    missed_count = 0
    on_time: list[datetime] = []
    tick = due_at
    for tick in _from(spec, due_at):
        if tick > now:
            break
        if now - tick <= MISFIRE_GRACE:
            on_time.append(tick)
        else:
            missed_count += 1
            missed.append(tick)
            if len(missed) > spec.max_catch_up:
                missed.pop(0)
    following = tick if tick > now else next_tick(spec, now)
    if spec.missed == "all":
        fire = missed
    elif spec.missed == "latest" and missed and not on_time:
        fire = missed[-1:]
    else:
        fire = []
    passed_over = [t for t in missed if t not in fire]
    skipped_count = missed_count - len(fire)
    return Due(tuple(fire + on_time), tuple(passed_over), skipped_count, following)


def _from(spec: ScheduleSpec, first: datetime) -> Iterator[datetime]:
    """``first`` (a tick) and the ticks after it."""
    yield first
    yield from ticks_after(spec, first)
