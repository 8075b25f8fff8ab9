"""Conveyor: state-machine workflows for commerce, durable on PostgreSQL, driven by Kafka.

The pure surface, in one place:

* declaring workflows: :class:`Workflow`, :class:`State`, :func:`on`, :func:`on_any`,
  :class:`RetryPolicy`, the contexts guards and actions receive;
* the pure step: :func:`decide` and what it returns (:class:`Decision`,
  :class:`Rejection`);
* the runtime's values: :class:`Event`, :class:`Outcome`, :class:`Instance`;
* :class:`Registry` / :func:`load_workflows`, :class:`Settings`, and the errors.

Importing ``engine`` (or ``engine.dsl`` to declare a workflow) loads no database or Kafka
driver and no web framework. The durable runtime and the store are imported from their
modules: ``from engine.runtime import Runtime``,
``from engine.store.queries import InstanceFilter``.
"""

from engine.decide import (
    ActionFailed,
    Decision,
    EventTrigger,
    Rejection,
    Snapshot,
    TimerTrigger,
    decide,
    initial_decision,
)
from engine.dsl import (
    ActionContext,
    EmptyPayload,
    GuardContext,
    RetryPolicy,
    State,
    Workflow,
    on,
    on_any,
)
from engine.errors import (
    ConveyorError,
    DefinitionError,
    InstanceConflict,
    InstanceNotFound,
    PayloadInvalid,
    UnknownWorkflow,
)
from engine.model import Event, Instance, InstanceStatus, Outcome, StartResult
from engine.registry import Registry, load_workflows
from engine.settings import Settings

__all__ = [
    "ActionContext",
    "ActionFailed",
    "ConveyorError",
    "Decision",
    "DefinitionError",
    "EmptyPayload",
    "Event",
    "EventTrigger",
    "GuardContext",
    "Instance",
    "InstanceConflict",
    "InstanceNotFound",
    "InstanceStatus",
    "Outcome",
    "PayloadInvalid",
    "Registry",
    "Rejection",
    "RetryPolicy",
    "Settings",
    "Snapshot",
    "StartResult",
    "State",
    "TimerTrigger",
    "UnknownWorkflow",
    "Workflow",
    "decide",
    "initial_decision",
    "load_workflows",
    "on",
    "on_any",
]
