"""Live instances whose definition is gone: their workflow, version or state is no longer
in the loaded registry (a version retired too early, a state renamed without a migration).

Pure: :func:`find_orphans` compares counts (read by :mod:`engine.store.orphans`) with a
registry; :func:`format_report` makes the lines ``conveyor check`` and the services' start
print. :func:`missing_definition` names what one instance lacks (planning uses it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from engine.errors import ConveyorError
from engine.registry import Registry

Missing = Literal["workflow", "version", "state"]

_WHY: dict[Missing, str] = {
    "workflow": "workflow not deployed",
    "version": "version not deployed",
    "state": "state not declared",
}


@dataclass(frozen=True, slots=True)
class LiveCount:
    """How many live (active, retrying, failed) instances sit in one (workflow, version, state)."""

    workflow: str
    version: int
    state: str
    count: int


@dataclass(frozen=True, slots=True)
class Orphan:
    """Live instances the registry cannot run: ``state`` is set when only the state is missing."""

    workflow: str
    version: int
    state: str | None
    missing: Missing
    count: int

    @property
    def label(self) -> str:
        where = f"{self.workflow} v{self.version}"
        return where if self.state is None else f"{where} state '{self.state}'"

    def describe(self) -> str:
        noun = "instance" if self.count == 1 else "instances"
        return f"{self.label}: {self.count:,} {noun}, {_WHY[self.missing]}"


def missing_definition(
    registry: Registry, workflow: str, version: int, state: str
) -> Missing | None:
    """What of (workflow, version, state) the registry lacks, or ``None`` when all is defined."""
    if workflow not in registry:
        return "workflow"
    if version not in registry.versions(workflow):
        return "version"
    if state not in registry.get(workflow, version).spec.states:
        return "state"
    return None


def find_orphans(registry: Registry, counts: Iterable[LiveCount]) -> list[Orphan]:
    """The orphans among ``counts``: a missing workflow or version is one group (summed over
    its states); a missing state is a group of its own. Sorted by workflow, version, state."""
    groups: dict[tuple[str, int, str | None], Orphan] = {}
    for item in counts:
        missing = missing_definition(registry, item.workflow, item.version, item.state)
        if missing is None:
            continue
        state = item.state if missing == "state" else None
        key = (item.workflow, item.version, state)
        previous = groups.get(key)
        total = item.count + (previous.count if previous else 0)
        groups[key] = Orphan(item.workflow, item.version, state, missing, total)
    return [groups[key] for key in sorted(groups, key=lambda k: (k[0], k[1], k[2] or ""))]


def format_report(orphans: Iterable[Orphan]) -> list[str]:
    """One line per orphan group, e.g. ``order v1: 1,203 instances, version not deployed``."""
    return [orphan.describe() for orphan in orphans]


ALL_DEFINED = "all live instances are defined"
# The problem type of an orphan's refusals over HTTP (see api.problems.problem_type).
ORPHANED_PROBLEM_TYPE = "/problems/orphaned"


class InstanceOrphaned(ConveyorError):
    """An operation needs the instance's definition, which is not loaded (409)."""

    status_code = 409
    title = "Instance orphaned"
    problem_type = ORPHANED_PROBLEM_TYPE

    def __init__(self, message: str, missing: Missing) -> None:
        super().__init__(message)
        self.extensions = {"reason": "orphaned", "missing": missing}


def orphaned_message(workflow: str, version: int, state: str, missing: Missing) -> str:
    """Why an event cannot apply to an instance of (workflow, version, state)."""
    if missing == "workflow":
        return f"workflow '{workflow}' is not deployed; instance in state '{state}'"
    if missing == "version":
        return f"{workflow} v{version} is not deployed; instance in state '{state}'"
    return f"{workflow} v{version} does not declare state '{state}'"


__all__ = [
    "ALL_DEFINED",
    "ORPHANED_PROBLEM_TYPE",
    "InstanceOrphaned",
    "LiveCount",
    "Missing",
    "Orphan",
    "find_orphans",
    "format_report",
    "missing_definition",
    "orphaned_message",
]
