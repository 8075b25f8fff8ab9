"""Request and response bodies of ``/v1/bulk`` (bulk actions), as pydantic models; the
filter is :class:`engine.bulk.BulkFilter`, checked by the handler (400 naming unknown or
bad filters, like the query parameters of ``GET /v1/instances``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas import NO_NUL, InstanceOut, RequestBody
from engine.bulk import RESERVED_TYPE, BulkFilter
from engine.spec import RESERVED_EVENT_PREFIX

JobStatusOut = Literal["running", "completed", "failed", "cancelled"]
ItemStatusParam = Literal["pending", "succeeded", "skipped", "failed"]


class BulkEvent(RequestBody):
    """The event a ``send_event`` job sends to each instance (its id is
    ``bulk:<job id>:<instance id>``)."""

    type: str = Field(
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="Event type (types starting with conveyor. are reserved: use the cancel "
        "action).",
    )
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.startswith(RESERVED_EVENT_PREFIX):
            raise ValueError(RESERVED_TYPE)
        return value


class CreateBulkJob(RequestBody):
    """A bulk action: what to do to which instances; ``dry_run`` only counts them."""

    action: Literal["cancel", "retry", "send_event"]
    filter: BulkFilter = Field(description="Which instances: the filters of GET /v1/instances.")
    dry_run: bool = Field(False, description="Count the instances and show a sample only.")
    reason: str = Field(
        "", max_length=1000, pattern=NO_NUL, description="Why; recorded in each history."
    )
    status_only: bool = Field(
        False, description="cancel: skip the workflows' cancel routes (status only)."
    )
    event: BulkEvent | None = Field(None, description="send_event: the event to send.")


class CreateBulkJobUnchecked(CreateBulkJob):
    """:class:`CreateBulkJob` as parsed: the filter is checked on its own, so that an
    unknown or bad filter answers 400 naming it (like a query parameter), not 422."""

    filter: dict[str, Any]  # type: ignore[assignment]


class BulkPreviewOut(BaseModel):
    dry_run: bool = True
    action: str
    count: int = Field(description="How many instances match now.")
    sample: list[InstanceOut] = Field(description="The oldest matching instances (at most 20).")


class BulkJobOut(BaseModel):
    id: str = Field(json_schema_extra={"format": "uuid"})
    action: Literal["cancel", "retry", "send_event"]
    status: JobStatusOut
    filter: dict[str, Any]
    spec: dict[str, Any] = Field(description="The filter, reason and event, as created.")
    total: int = Field(description="Instances targeted (fixed when the job was created).")
    done: int
    succeeded: int
    skipped: int = Field(description="Not applicable (already cancelled, completed, ...).")
    failed: int
    progress: float = Field(ge=0, le=1)
    request_id: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: dict[str, Any] | None


class BulkItemOut(BaseModel):
    instance_id: str = Field(json_schema_extra={"format": "uuid"})
    status: ItemStatusParam
    reason: str | None
    done_at: datetime | None


class BulkItemPage(BaseModel):
    items: list[BulkItemOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class BulkItemsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: ItemStatusParam | None = None
    cursor: str | None = Field(
        None, min_length=1, max_length=100, description="The previous page's next_cursor."
    )
    limit: int = Field(100, ge=1, le=1000)


BULK_MODELS: tuple[type[BaseModel], ...] = (
    BulkFilter,
    CreateBulkJob,
    BulkPreviewOut,
    BulkJobOut,
    BulkItemPage,
)
