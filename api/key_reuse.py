"""The answer of ``GET /v1/workflows/{name}/instances/{business_key}`` under key reuse.

A workflow declared with ``key_reuse = "after_end"`` may start a new instance with the
business key of an ended one (``Runtime.start``). The lookup by key answers the instance
that holds the key now (the newest), and lists the ones that held it before in
``earlier``, newest first, up to :data:`EARLIER_LIMIT` (empty for a key used once).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas import InstanceOut
from engine.model import Instance, InstanceStatus

EARLIER_LIMIT = 20
"""How many earlier instances of a key the lookup lists."""


class EarlierInstance(BaseModel):
    """An ended instance that gave its business key up to a newer one."""

    id: str = Field(json_schema_extra={"format": "uuid"})
    version: int
    status: InstanceStatus
    state: str
    created_at: datetime


class InstanceByKey(InstanceOut):
    earlier: list[EarlierInstance] = Field(
        max_length=EARLIER_LIMIT,
        description="Instances that held this business key before (the workflow lets a key "
        f"be reused after its instance ended), newest first, at most {EARLIER_LIMIT}; empty "
        "when the key was used once.",
    )


KEY_REUSE_MODELS: tuple[type[BaseModel], ...] = (EarlierInstance, InstanceByKey)


def earlier_json(instances: list[Instance]) -> list[dict[str, Any]]:
    """The ``earlier`` list of the lookup by key."""
    return [
        {
            "id": str(i.id),
            "version": i.version,
            "status": i.status.value,
            "state": i.state,
            "created_at": i.created_at.isoformat(),
        }
        for i in instances
    ]
