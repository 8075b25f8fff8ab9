"""Service levels of states: when an instance should have left its state, and whether it
is late. Pure: the registry says which states declare an SLA (``State(sla=...)``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.errors import UnknownWorkflow
from engine.model import Instance, InstanceStatus
from engine.registry import Registry

RUNNING = (InstanceStatus.ACTIVE, InstanceStatus.RETRYING, InstanceStatus.FAILED)
"""Statuses whose instances are still in their state (an SLA or time in state counts)."""


@dataclass(frozen=True, slots=True)
class StateSla:
    """The SLA of one state of one workflow version."""

    workflow: str
    version: int
    state: str
    sla: timedelta


def state_slas(registry: Registry, workflow: str | None = None) -> Iterator[StateSla]:
    """Every state with an SLA, of every registered version (of ``workflow`` only, if set)."""
    for definition in registry.all():
        spec = definition.spec
        if workflow is not None and spec.name != workflow:
            continue
        for state, sla in spec.slas.items():
            yield StateSla(spec.name, spec.version, state, sla)


def sla_of(registry: Registry, instance: Instance) -> timedelta | None:
    """The SLA of the state ``instance`` is in (None: none declared, or not running)."""
    if instance.status not in RUNNING:
        return None
    try:
        spec = registry.get(instance.workflow, instance.version).spec
    except UnknownWorkflow:  # a version no longer deployed: no SLA known
        return None
    return spec.slas.get(instance.state)


def sla_due_at(registry: Registry, instance: Instance) -> datetime | None:
    """When ``instance`` should leave its state by, or None."""
    sla = sla_of(registry, instance)
    return None if sla is None else instance.state_entered_at + sla


def sla_breached(due_at: datetime | None, now: datetime) -> bool:
    return due_at is not None and now > due_at


__all__ = ["RUNNING", "StateSla", "sla_breached", "sla_due_at", "sla_of", "state_slas"]
