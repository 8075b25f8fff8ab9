"""Checking a migration by replay: would the target version have taken this instance where
the migration puts it?

Pure (no I/O, no clock): for one instance, its accepted history (the start, each applied
event and timer, operators' moves, earlier migrations) is replayed against the target
version with the same pure step production uses (:func:`engine.decide.decide`), each
trigger at the time it was recorded, starting from the upgraded start data. At every step
the state the target reaches is compared with where the source version went (mapped by
the migration); at the end, with the mapped current state. The verdict:

``ok``
    the target agrees all the way: migrating the instance is safe;
``diverges``
    at some step the target decides otherwise (another state, a rejection, an action that
    raises): the verdict names the event, what the target decided and why;
``unmapped``
    the instance is in a state the migration lists as not migratable;
``invalid_data``
    the upgraded data fails the target's data schema (or the upgrade raised).

Only ``ok`` instances are migrated, unless forced; ``unmapped`` and ``invalid_data`` ones
never are.

Where replay starts: at the instance's last migration (its recorded data and state), else
at its start (the start data recorded in the history; instances started before Conveyor
recorded it replay from their current data). Replay also keeps the target's timers: a
recorded timer must be one the target had pending and due by then, and a target timer
due before a recorded event (a new timer, a shorter delay) would have fired first, so the
instance diverges there. An instance whose history retention removed is judged ``ok`` by
its state alone, with a note saying so. Data is upgraded and validated, not compared: the
verdict is about states.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from engine.decide import (
    ActionFailed,
    EventTrigger,
    Rejection,
    Snapshot,
    TimerTrigger,
    decide,
    initial_decision,
    move_decision,
)
from engine.decisions import FieldError
from engine.evolution import MigrationSpec

VerdictOutcome = Literal["ok", "diverges", "unmapped", "invalid_data"]

REPLAYED = frozenset({"started", "applied", "moved", "migrated"})
"""The history outcomes replay reads (accepted triggers and operators' changes)."""

START_DATA = "data"
"""Where a start's history row keeps the data the instance was started with."""

TIMER_SLACK = timedelta(seconds=1)
"""How far a recorded time may be from a timer's due time and still count as on time (a
history row is stamped when its transaction commits, a little after the decision)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One row of an instance's history, as replay reads it."""

    revision: int
    event_id: str
    event_type: str
    source: str
    outcome: str  # started, applied, moved, migrated
    from_state: str | None
    to_state: str | None
    payload: Mapping[str, Any]
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where the target version parts from the recorded history."""

    revision: int
    event_id: str
    event_type: str
    expected: str | None  # the mapped state the source version reached there
    decided: str  # what the target did instead: "state 'x'", "rejected", "failed"
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "expected": self.expected,
            "decided": self.decided,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a migration would do to one instance."""

    outcome: VerdictOutcome
    from_state: str
    to_state: str | None  # the mapped state (None: unmapped)
    data: Mapping[str, Any] | None  # the upgraded data (None when it is invalid)
    divergence: Divergence | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "outcome": self.outcome,
            "from_state": self.from_state,
            "to_state": self.to_state,
        }
        if self.divergence is not None:
            shown["divergence"] = self.divergence.to_json()
        if self.reason is not None:
            shown["reason"] = self.reason
        return shown


async def judge(
    migration: MigrationSpec, state: str, data: Mapping[str, Any], steps: Sequence[Step]
) -> Verdict:
    """The verdict on migrating an instance in ``state`` with ``data`` (both the source
    version's), whose accepted history is ``steps`` (in order)."""
    target_state = migration.target_state(state)
    if target_state is None:
        return Verdict(
            "unmapped",
            state,
            None,
            None,
            reason=f"'{state}' is not migratable in {migration.label}",
        )
    upgraded = migration.upgraded(data)
    if isinstance(upgraded, tuple):
        return Verdict(
            "invalid_data", state, target_state, None, reason=_field_errors(migration, upgraded)
        )
    found = await _replay(migration, data, steps, target_state)
    if isinstance(found, Divergence):
        return Verdict("diverges", state, target_state, upgraded, found)
    return Verdict("ok", state, target_state, upgraded, reason=found)


async def _replay(
    migration: MigrationSpec,
    current_data: Mapping[str, Any],
    steps: Sequence[Step],
    target_state: str,
) -> Divergence | str | None:
    """None when the target agrees all the way; a :class:`Divergence`; or a note (str)
    when there was nothing to replay."""
    target = migration.target_definition
    label = migration.target.label
    begin = _base(steps)
    if begin is None:
        return "no history to replay (removed by retention): judged by its state only"
    base = steps[begin]
    # The target's pending timers as replay goes (name -> due); None while unknown (after
    # an earlier migration, until the instance next changes state).
    timers: dict[str, datetime] | None
    if base.outcome == "migrated":
        recorded = base.payload.get("data")
        start_data = recorded if isinstance(recorded, Mapping) else current_data
        upgraded = migration.upgraded(start_data)
        if isinstance(upgraded, tuple):
            return _at(base, None, "invalid data", _field_errors(migration, upgraded))
        state = migration.target_state(base.to_state or "")
        if state is None:
            return _at(base, None, "unmapped", f"'{base.to_state}' is not migratable")
        data: Mapping[str, Any] = upgraded
        timers = None
    else:
        recorded = base.payload.get(START_DATA)
        start_data = recorded if isinstance(recorded, Mapping) else current_data
        upgraded = migration.upgraded(start_data)
        if isinstance(upgraded, tuple):
            return _at(base, None, "invalid data", _field_errors(migration, upgraded))
        expected = migration.target_state(base.to_state or "")
        try:
            started = await initial_decision(
                target, upgraded, event_id=base.event_id, now=base.occurred_at
            )
        except ActionFailed as error:
            return _at(base, expected, "failed", f"{label}: {error}")
        if isinstance(started, Rejection):
            return _at(base, expected, "rejected", started.message)
        state, data = started.to_state, started.data
        timers = {t.name: t.due_at for t in started.timers_to_set}
        if expected is not None and state != expected:
            return _at(
                base,
                expected,
                f"state '{state}'",
                f"{label} starts in '{state}'; the instance started in '{base.to_state}', "
                f"which maps to '{expected}'",
            )
    revision = base.revision
    for step in steps[begin + 1 :]:
        expected = migration.target_state(step.to_state or "")
        is_timer = step.outcome == "applied" and step.source == "timer"
        if timers is not None and step.outcome in ("applied", "moved"):
            if is_timer:
                due = timers.get(step.event_type)
                if due is None:
                    return _at(
                        step,
                        expected,
                        "no such timer",
                        f"{label} has no timer '{step.event_type}' pending in '{state}'",
                    )
                if due > step.occurred_at + TIMER_SLACK:
                    return _at(
                        step,
                        expected,
                        f"timer '{step.event_type}' not due",
                        f"{label}'s timer '{step.event_type}' of '{state}' is due at "
                        f"{due.isoformat()}, later than it fired ({step.occurred_at.isoformat()})",
                    )
            early = _earlier_timer(timers, step, is_timer)
            if early is not None:
                name, due = early
                return _at(
                    step,
                    expected,
                    f"timer '{name}'",
                    f"{label}'s timer '{name}' of '{state}' was due at {due.isoformat()}, "
                    f"before this {'timer' if is_timer else 'event'} at "
                    f"{step.occurred_at.isoformat()}: it would have fired first",
                )
        if step.outcome == "moved":
            if expected is None:
                return _at(step, None, "unmapped", f"moved into '{step.to_state}', not migratable")
            try:
                moved = await move_decision(
                    target,
                    Snapshot(state, data, revision),
                    expected,
                    event_id=step.event_id,
                    now=step.occurred_at,
                    run_hooks=step.payload.get("run_hooks") is True,
                )
            except ActionFailed as error:
                return _at(step, expected, "failed", f"{label}: {error}")
            state, data, revision = expected, moved.data, step.revision
            timers = {t.name: t.due_at for t in moved.timers_to_set}
            continue
        if step.outcome != "applied":
            continue
        snapshot = Snapshot(state, data, revision)
        trigger: EventTrigger | TimerTrigger = (
            TimerTrigger(step.event_id, step.event_type, state)
            if is_timer
            else EventTrigger(step.event_id, step.event_type, step.payload, step.source)
        )
        try:
            decision = await decide(target, snapshot, trigger, step.occurred_at)
        except ActionFailed as error:
            return _at(step, expected, "failed", f"{label}: {error}")
        if isinstance(decision, Rejection):
            return _at(step, expected, f"rejected ({decision.reason})", decision.message)
        if expected is not None and decision.to_state != expected:
            return _at(
                step,
                expected,
                f"state '{decision.to_state}'",
                f"{label} takes '{decision.transition}' to '{decision.to_state}'; the instance "
                f"went to '{step.to_state}', which maps to '{expected}'",
            )
        if decision.to_state != state or decision.timers_to_set:
            timers = {} if timers is None and decision.to_state != state else timers
        if timers is not None:
            if is_timer:
                timers.pop(step.event_type, None)
            for name in decision.timers_to_cancel:
                timers.pop(name, None)
            timers.update({t.name: t.due_at for t in decision.timers_to_set})
        state, data, revision = decision.to_state, decision.data, step.revision
    if state != target_state:
        last = steps[-1]
        return Divergence(
            last.revision,
            last.event_id,
            last.event_type,
            target_state,
            f"state '{state}'",
            f"replayed on {label} the instance ends in '{state}'; the migration puts it in "
            f"'{target_state}'",
        )
    return None


def _earlier_timer(
    timers: Mapping[str, datetime], step: Step, is_timer: bool
) -> tuple[str, datetime] | None:
    """A pending target timer (other than the one ``step`` fires) due before ``step``: the
    target would have fired it first."""
    for name, due in sorted(timers.items(), key=lambda item: item[1]):
        if is_timer and name == step.event_type:
            continue
        if due < step.occurred_at - TIMER_SLACK:
            return name, due
    return None


def _base(steps: Sequence[Step]) -> int | None:
    """Where replay begins: the last migration, else the start."""
    start = None
    for index, step in enumerate(steps):
        if step.outcome == "migrated" or (step.outcome == "started" and start is None):
            start = index
    return start


def _at(step: Step, expected: str | None, decided: str, reason: str) -> Divergence:
    return Divergence(step.revision, step.event_id, step.event_type, expected, decided, reason)


def _field_errors(migration: MigrationSpec, errors: tuple[FieldError, ...]) -> str:
    details = "; ".join(f"{e.path or '(data)'}: {e.message}" for e in errors)
    return f"the upgraded data does not fit {migration.target.label}: {details}"


__all__ = ["REPLAYED", "Divergence", "Step", "Verdict", "VerdictOutcome", "judge"]
