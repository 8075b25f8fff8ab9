"""The one error hierarchy of Conveyor.

Class attributes drive behaviour at the edges: ``status_code`` and ``title`` for HTTP
problem+json answers. Whether the Kafka worker retries a batch or dead-letters the message
is decided in one place, :func:`engine.transient.is_transient`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""

    status_code: int = 500
    title: str = "Internal error"
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
    """PostgreSQL or Kafka cannot be reached (transient: the worker retries the batch)."""

    status_code = 503
    title = "Dependency unavailable"


class UnknownState(ConveyorError):
    """A snapshot names a state the workflow definition does not declare (version drift)."""

    title = "Unknown workflow state"


class InstanceNotFound(NotFound):
    title = "Instance not found"


class InstanceConflict(ConveyorError):
    """The business key already belongs to an instance from a different start."""

    status_code = 409
    title = "Instance already exists"


class InvalidRequest(ConveyorError):
    status_code = 400
    title = "Invalid request"


class InvalidState(ConveyorError):
    """An operation does not apply to the instance's status (retry an active instance)."""

    status_code = 409
    title = "Operation not allowed in this status"


class CancelFailed(ConveyorError):
    """The workflow's cancel route raised: the instance was not cancelled."""

    status_code = 409
    title = "Cancel route failed"


class PayloadInvalid(ConveyorError):
    """Data or an event payload failed its schema; ``errors`` names each field."""

    status_code = 422
    title = "Invalid payload"

    def __init__(self, message: str, field_errors: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.field_errors = tuple(field_errors)

    @property
    def extensions(self) -> dict[str, Any]:
        return {"errors": [{"path": f.path, "message": f.message} for f in self.field_errors]}
