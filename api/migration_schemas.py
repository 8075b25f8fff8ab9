"""Request and response bodies of the migration routes (``/v1/workflows/{name}/migrations``
and ``/v1/migrations``), as pydantic models. The filter is
:class:`engine.migrate.MigrationFilter`, checked by the handler (400 naming an unknown or
bad filter, like the bulk filters)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas import RequestBody
from engine.migrate import MigrationFilter

MAX_VERSION = 2**31 - 1
VerdictOutcomeOut = Literal["ok", "diverges", "unmapped", "invalid_data"]
JobStatusOut = Literal["running", "completed", "failed", "cancelled"]


class MigrationOut(BaseModel):
    """A declared migration between two versions of a workflow."""

    name: str
    workflow: str
    from_version: int
    to_version: int
    description: str
    states: dict[str, str] = Field(
        description="Every running source state that migrates -> its target state."
    )
    not_migratable: list[str] = Field(description="Source states whose instances stay.")
    upgrades_data: bool = Field(description="Whether the data is upgraded as it migrates.")


class MigrationList(BaseModel):
    items: list[MigrationOut]


class CreateMigration(RequestBody):
    """Migrate the running instances ``filter`` selects from one version to another;
    ``dry_run`` only judges them (by replaying their history on the target version)."""

    from_version: int = Field(ge=1, le=MAX_VERSION)
    to_version: int = Field(ge=1, le=MAX_VERSION)
    filter: MigrationFilter = Field(
        default_factory=MigrationFilter,
        description="Which running instances of from_version (default: all of them).",
    )
    dry_run: bool = Field(False, description="Judge each instance and report; write nothing.")
    force: bool = Field(
        False, description="Migrate the instances whose replay diverges on the target too."
    )


class CreateMigrationUnchecked(CreateMigration):
    """:class:`CreateMigration` as parsed: the filter is checked on its own, so that an
    unknown or bad filter answers 400 naming it, not 422."""

    filter: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]


class DivergenceOut(BaseModel):
    """Where the target version parts from the instance's recorded history."""

    revision: int
    event_id: str
    event_type: str
    expected: str | None = Field(description="The mapped state the source version reached.")
    decided: str = Field(description="What the target decided instead.")
    reason: str


class InstanceVerdictOut(BaseModel):
    instance_id: str = Field(json_schema_extra={"format": "uuid"})
    business_key: str
    outcome: VerdictOutcomeOut
    from_state: str
    to_state: str | None = Field(description="The mapped state (null: not migratable).")
    divergence: DivergenceOut | None = None
    reason: str | None = None


class VerdictCounts(BaseModel):
    ok: int
    diverges: int
    unmapped: int
    invalid_data: int


class MigrationReportOut(BaseModel):
    """A dry run: every selected instance judged; those that would not simply migrate
    listed (at most 1,000; ``truncated`` when there were more)."""

    dry_run: bool
    migration: MigrationOut
    selected: int
    would_migrate: int = Field(description="ok, plus diverges when forced.")
    counts: VerdictCounts
    instances: list[InstanceVerdictOut]
    truncated: bool


class MigrationJobOut(BaseModel):
    id: str = Field(json_schema_extra={"format": "uuid"})
    migration: str
    workflow: str
    from_version: int
    to_version: int
    force: bool
    status: JobStatusOut
    filter: dict[str, Any]
    spec: dict[str, Any] = Field(description="The migration, versions, filter and force.")
    total: int = Field(description="Instances targeted (fixed when the job was created).")
    done: int
    succeeded: int = Field(description="Migrated.")
    skipped: int = Field(description="Not migrated: diverging (unless forced), unmapped, ...")
    failed: int
    progress: float = Field(ge=0, le=1)
    request_id: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: dict[str, Any] | None


MIGRATION_MODELS: tuple[type[BaseModel], ...] = (
    MigrationList,
    CreateMigration,
    MigrationReportOut,
    MigrationJobOut,
)
