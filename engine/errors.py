"""The one error hierarchy of Conveyor.

Class attributes drive behaviour at the edges: ``status_code`` and ``title`` for HTTP
problem+json answers, ``retriable`` for the Kafka worker (retry the batch, or dead-letter
the message).
"""

from __future__ import annotations


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""

    status_code: int = 500
    title: str = "Internal error"
    retriable: bool = False
    problem_type: str = "about:blank"


class DefinitionError(ConveyorError):
    """A workflow definition is broken; raised when its class is defined."""

    title = "Invalid workflow definition"


class ConfigurationError(ConveyorError):
    """Settings or wiring are wrong (bad URL, unknown workflow module)."""

    title = "Configuration error"


class NotFound(ConveyorError):
    status_code = 404
    title = "Not found"


class UnknownWorkflow(NotFound):
    title = "Unknown workflow"


class DependencyUnavailable(ConveyorError):
    """PostgreSQL or Kafka cannot be reached."""

    status_code = 503
    title = "Dependency unavailable"
    retriable = True


class UnknownState(ConveyorError):
    """A snapshot names a state the workflow definition does not declare (version drift)."""

    title = "Unknown workflow state"
