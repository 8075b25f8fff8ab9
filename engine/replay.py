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
recorded it replay from their current data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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

    @property
    def migratable(self) -> bool:
        """Can be migrated (``ok``; ``diverges`` only when forced)."""
        return self.outcome in ("ok", "diverges")

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
    divergence = await _replay(migration, data, steps, target_state)
    outcome: VerdictOutcome = "ok" if divergence is None else "diverges"
    return Verdict(outcome, state, target_state, upgraded, divergence)


async def _replay(
    migration: MigrationSpec,
    current_data: Mapping[str, Any],
    steps: Sequence[Step],
    target_state: str,
) -> Divergence | None:
    target = migration.target_definition
    label = migration.target.label
    begin = _base(steps)
    if begin is None:
        return None  # no history to replay (retention removed it): nothing to compare
    base = steps[begin]
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
    else:
        start_data = base.payload if base.payload else current_data
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
        if step.outcome == "moved":
            if expected is None:
                return _at(step, None, "unmapped", f"moved into '{step.to_state}', not migratable")
            if step.payload.get("run_hooks") is True:  # the move ran hooks: run the target's
                try:
                    moved = await move_decision(
                        target,
                        Snapshot(state, data, revision),
                        expected,
                        event_id=step.event_id,
                        now=step.occurred_at,
                        run_hooks=True,
                    )
                except ActionFailed as error:
                    return _at(step, expected, "failed", f"{label}: {error}")
                data = moved.data
            state, revision = expected, step.revision
            continue
        if step.outcome != "applied":
            continue
        snapshot = Snapshot(state, data, revision)
        trigger: EventTrigger | TimerTrigger = (
            TimerTrigger(step.event_id, step.event_type, state)
            if step.source == "timer"
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
