"""Typed settings, read from ``CONVEYOR_*`` environment variables.

Built by entry points (CLI, app factory, tests), never at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

WorkerService = Literal["consumer", "relay", "scheduler", "retention"]
WORKER_SERVICES: tuple[WorkerService, ...] = ("consumer", "relay", "scheduler", "retention")


class Settings(BaseSettings):
    """Everything Conveyor reads from its environment. Defaults match the local stack."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore", frozen=True)

    database_url: str = Field(
        "postgresql+asyncpg://conveyor:conveyor@127.0.0.1:5432/conveyor",
        description="SQLAlchemy URL of the PostgreSQL database (asyncpg driver).",
    )
    database_schema: str | None = Field(
        None, description="Schema to use instead of public (search_path); made by migrate."
    )
    database_pool_size: int = Field(10, ge=1, le=200, description="Connections per process.")
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated Kafka bootstrap servers."
    )
    topic_prefix: str = Field("conveyor", description="Prefix of every topic Conveyor owns.")
    consumer_group: str = Field("conveyor-workers", description="Kafka consumer group of workers.")
    workflow_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["workflows"],
        description="Comma-separated modules or packages to load workflows from.",
    )
    worker_services: Annotated[list[WorkerService], NoDecode] = Field(
        default_factory=lambda: list(WORKER_SERVICES),
        description="Comma-separated services a worker runs: consumer, relay, scheduler, "
        "retention (default: all). Run the relay in a process of its own, for instance, "
        "to give the consumers all of theirs.",
    )
    worker_batch_size: int = Field(
        4000,
        ge=1,
        le=20000,
        description="Kafka records a worker's consumer takes as one batch (fetched ahead while "
        "the batch before is applied): the bound on work in flight. Bigger batches share "
        "round trips and commits among more events; a batch is redelivered whole after a crash.",
    )
    worker_lanes: int = Field(
        4,
        ge=1,
        le=32,
        description="Groups of partitions a batch is split into and applied concurrently, one "
        "transaction and one pooled connection each (keep it below database_pool_size).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    log_format: Literal["console", "json"] = Field(
        "console", description="console: readable, for development; json: one object a line."
    )
    sentry_dsn: str | None = Field(None, description="Sentry DSN; Sentry is off when unset.")
    sentry_environment: str = Field("development")
    sentry_traces_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    http_host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    http_port: int = Field(8000, ge=0, le=65535)
    http_workers: int = Field(1, ge=1, le=64, description="Sanic worker processes.")
    access_log: bool = Field(
        False,
        description="Log one line per HTTP request (method, path, status, duration, request "
        "id) at INFO, logger conveyor.access. Off: no cost per request.",
    )
    inbox_retention_days: float = Field(
        14.0,
        gt=0,
        description="How long processed event ids are remembered; keep it longer than "
        "the Kafka topics' retention, or a late redelivery could apply twice.",
    )
    outbox_retention_hours: float = Field(
        24.0, gt=0, description="How long published outbox rows are kept."
    )
    history_retention_days: float | None = Field(
        None,
        gt=0,
        description="How long the history of completed and cancelled instances is kept after "
        "they ended; then the retention service deletes it (the instance row stays). Failed "
        "and active instances keep theirs. Unset: history is kept forever.",
    )
    database_outage_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a worker may fail to reach PostgreSQL before it gives up what "
        "it holds (it leaves the consumer group and the relay's leadership, so healthy "
        "workers take over) and its /health answers 503; it rejoins once PostgreSQL answers.",
    )
    worker_health_host: str = Field(
        "127.0.0.1", description="Address a worker's /health and /ready endpoint binds to."
    )
    worker_health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of a worker's /metrics, /health and /ready endpoint (off when "
        "unset; 0 picks a free port and logs it).",
    )
    ready_timeout_seconds: float = Field(
        2.0, gt=0, description="Time each readiness check may take before it counts as down."
    )

    allow_orphans: bool = Field(
        False,
        description="Let api, worker and dev start although live instances have a workflow, "
        "version or state the loaded workflows do not define (see `conveyor check`); their "
        "events are then refused as orphaned (HTTP 409, dead letter 'orphaned').",
    )

    @field_validator("workflow_modules", "worker_services", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("worker_services")
    @classmethod
    def _some_services(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"name at least one of {', '.join(WORKER_SERVICES)}")
        return list(dict.fromkeys(value))

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if value.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("database_url must be a postgresql+asyncpg:// URL")
        return value

    def kafka_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()]


def env_var(field: str) -> str:
    """The environment variable a setting is read from: ``http_port`` -> ``CONVEYOR_HTTP_PORT``."""
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def describe_invalid(error: ValidationError, *, names: Mapping[str, str] = {}) -> list[str]:
    """One line per bad setting, naming its environment variable (or ``names[field]``, e.g.
    a command-line option) and what is wrong with the value, for people rather than for
    pydantic: ``CONVEYOR_HTTP_PORT: input should be a valid integer, ...``.

    Values are not repeated (a URL or DSN may hold a password), except the offending items
    of a list, which name modules or services.
    """
    problems: dict[str, dict[str, list[str]]] = {}  # variable -> message -> bad list items
    for item in error.errors(include_url=False):
        loc = item["loc"]
        field = str(loc[0]) if loc else ""
        variable = names.get(field) or (env_var(field) if field else "settings")
        message = item["msg"].removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        bad_items = problems.setdefault(variable, {}).setdefault(message, [])
        if len(loc) > 1:
            bad_items.append(repr(item["input"]))
    return [
        f"{variable}: "
        + "; ".join(f"{', '.join(bad)}: {msg}" if bad else msg for msg, bad in messages.items())
        for variable, messages in problems.items()
    ]
