"""The names of every topic Conveyor owns, derived from one prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """``{prefix}.in`` and ``{prefix}.in.{workflow}`` in; events, commands, state changes
    and dead letters out."""

    prefix: str

    @property
    def shared(self) -> str:
        """Inbound events for any workflow."""
        return f"{self.prefix}.in"

    def workflow(self, name: str) -> str:
        """Inbound events for one workflow."""
        return f"{self.prefix}.in.{name}"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter"

    @property
    def events(self) -> str:
        """Domain events workflows emit (unless a transition names a topic)."""
        return f"{self.prefix}.events"

    @property
    def commands(self) -> str:
        """Commands workflows send to other services."""
        return f"{self.prefix}.commands"

    @property
    def instances(self) -> str:
        """``conveyor.instance.state_changed`` events."""
        return f"{self.prefix}.instances"
