"""Every table of Conveyor, declared once (SQLAlchemy Core metadata).

The migrations in ``alembic/versions`` make the database; this module says what they
make. Alembic gets ``metadata`` as its ``target_metadata``, and
``tests/integration/test_schema.py`` migrates a fresh schema and checks that Alembic's
autogenerate comparison finds no difference (what ``alembic check`` does), so the two
cannot drift apart: a migration that changes a table changes it here too.

The statements themselves stay hand-written SQL (``engine.store`` modules): the hot path
prepares each set-based statement once per connection on asyncpg, which this metadata
does not change. Names are PostgreSQL's own defaults (``<table>_pkey``,
``<table>_<column>_key``, ``<table>_<column>_fkey``) where the migrations let PostgreSQL
pick them, so that the declaration names what the database holds.

Not tables, so not here: the ``conveyor_outbox_notify()`` function and the
``outbox_notify`` trigger on ``outbox`` (migration 0002) that wake the outbox relay.
"""

from __future__ import annotations

from sqlalchemy import (
    TIMESTAMP,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = MetaData()

NOW = text("now()")


def _timestamp() -> TIMESTAMP:
    return TIMESTAMP(timezone=True)


def _instance_ref(table: str) -> ForeignKey:
    """``instance_id`` of a row that goes with its instance."""
    return ForeignKey("instances.id", ondelete="CASCADE", name=f"{table}_instance_id_fkey")


# One workflow instance: its state, data and status; ``revision`` counts its transitions.
instances = Table(
    "instances",
    metadata,
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("workflow", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("business_key", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("status", Text, nullable=False),
    Column("revision", BigInteger, nullable=False, server_default="0"),
    # The idempotency key of the start that created it.
    Column("start_key", Text, nullable=True),
    Column("error", JSONB, nullable=True),
    Column("created_at", _timestamp(), nullable=False, server_default=NOW),
    Column("updated_at", _timestamp(), nullable=False, server_default=NOW),
    Column("state_entered_at", _timestamp(), nullable=False),
    # Key reuse (0007): true on an ended instance whose business key a newer one took.
    Column("key_released", Boolean, nullable=False, server_default=text("false")),
    PrimaryKeyConstraint("id", name="instances_pkey"),
    CheckConstraint(
        "status in ('active', 'retrying', 'completed', 'failed', 'cancelled')",
        name="instances_status",
    ),
    # One instance holds a (workflow, business key): the one whose key is not released
    # (0007; before, a unique constraint ``instances_workflow_business_key``).
    Index(
        "instances_key_holder",
        "workflow",
        "business_key",
        unique=True,
        postgresql_where=text("not key_released"),
    ),
    # The earlier instances of a business key, newest first (0007).
    Index(
        "instances_released_keys",
        "workflow",
        "business_key",
        "created_at",
        postgresql_where=text("key_released"),
    ),
    # Start idempotency: one instance per (workflow, idempotency key).
    Index(
        "instances_start_key",
        "workflow",
        "start_key",
        unique=True,
        postgresql_where=text("start_key is not null"),
    ),
    # List queries: filters + keyset order (created_at, id) / (updated_at, id).
    Index("instances_created", "created_at", "id"),
    Index("instances_updated", "updated_at", "id"),
    Index("instances_workflow_state", "workflow", "state", "created_at"),
    Index("instances_status", "status", "created_at"),
    # Business key prefix filters (``like 'prefix%'``).
    Index(
        "instances_business_key_prefix",
        "business_key",
        postgresql_ops={"business_key": "text_pattern_ops"},
    ),
    # History retention walks ended instances by when they ended (0004).
    Index(
        "instances_ended",
        "updated_at",
        "id",
        postgresql_where=text("status in ('completed', 'cancelled')"),
    ),
    # Business-data filters (``data @> :fields``) (0006).
    Index(
        "instances_data",
        "data",
        postgresql_using="gin",
        postgresql_ops={"data": "jsonb_path_ops"},
    ),
    # Time in state, SLA breaches and per-state counts (index-only with version, status).
    Index(
        "instances_state_age",
        "workflow",
        "state",
        "state_entered_at",
        postgresql_include=["version", "status"],
    ),
    # Running instances by time in state, longest first (stuck-instance lists).
    Index(
        "instances_running_age",
        "state_entered_at",
        "id",
        postgresql_where=text("status in ('active', 'retrying', 'failed')"),
    ),
)

# What happened to an instance, in order: one row per applied, rejected or failed trigger.
history = Table(
    "history",
    metadata,
    Column("id", BigInteger, Identity(always=True), nullable=False),
    Column("instance_id", UUID(as_uuid=True), _instance_ref("history"), nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("from_state", Text, nullable=True),
    Column("to_state", Text, nullable=True),
    Column("transition", Text, nullable=True),
    Column("payload", JSONB, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("reason", Text, nullable=True),
    Column("request_id", Text, nullable=True),
    Column("occurred_at", _timestamp(), nullable=False, server_default=NOW),
    PrimaryKeyConstraint("id", name="history_pkey"),
    Index("history_instance", "instance_id", "id"),
)

# Deduplication: the events each instance has seen (event ids are unique per instance).
inbox = Table(
    "inbox",
    metadata,
    Column("instance_id", UUID(as_uuid=True), nullable=False),
    Column("event_id", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("processed_at", _timestamp(), nullable=False, server_default=NOW),
    # Also the index of the runtime's lookup by (instance_id, event_id) pairs.
    PrimaryKeyConstraint("instance_id", "event_id", name="inbox_pkey"),
    Index("inbox_processed_at", "processed_at"),
)

# Timers of instances (the DSL's timers and ``conveyor.retry``), one per (instance, name).
timers = Table(
    "timers",
    metadata,
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("instance_id", UUID(as_uuid=True), _instance_ref("timers"), nullable=False),
    Column("name", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("due_at", _timestamp(), nullable=False),
    # A scheduler's lease: set when claimed, so that a crashed scheduler's timers become
    # claimable again once it expires.
    Column("claimed_until", _timestamp(), nullable=True),
    Column("created_at", _timestamp(), nullable=False, server_default=NOW),
    PrimaryKeyConstraint("id", name="timers_pkey"),
    UniqueConstraint("instance_id", "name", name="timers_instance_name"),
    Index("timers_due", "due_at"),
)

# Kafka messages written in the instance's transaction; the relay publishes them.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(always=True), nullable=False),
    Column("message_id", UUID(as_uuid=True), nullable=False),
    Column("instance_id", UUID(as_uuid=True), nullable=True),
    Column("topic", Text, nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("headers", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", _timestamp(), nullable=False, server_default=NOW),
    Column("published_at", _timestamp(), nullable=True),
    PrimaryKeyConstraint("id", name="outbox_pkey"),
    UniqueConstraint("message_id", name="outbox_message_id_key"),
    # The relay reads only unpublished rows, in id order.
    Index("outbox_pending", "id", postgresql_where=text("published_at is null")),
    # An instance's messages, newest first (the console's instance page).
    Index("outbox_instance", "instance_id", "id", postgresql_where=text("instance_id is not null")),
)

# API keys: only the SHA-256 of a key is stored, never the key.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    # The first characters of the key, shown in listings and logs; never the secret.
    Column("prefix", Text, nullable=False),
    Column("key_hash", LargeBinary, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("created_at", _timestamp(), nullable=False, server_default=NOW),
    Column("revoked_at", _timestamp(), nullable=True),
    PrimaryKeyConstraint("id", name="api_keys_pkey"),
    UniqueConstraint("prefix", name="api_keys_prefix_key"),
    UniqueConstraint("key_hash", name="api_keys_key_hash_key"),
    CheckConstraint("scopes <@ array['read', 'write', 'admin']::text[]", name="api_keys_scopes"),
)

# Idempotency-Key: a claim (status and body null, ``claimed_until`` the claimer's lease),
# then the stored response of the first request with a (api key, key, endpoint).
idempotent_responses = Table(
    "idempotent_responses",
    metadata,
    Column("key", Text, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    Column("status", Integer, nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("created_at", _timestamp(), nullable=False, server_default=NOW),
    Column("api_key_id", UUID(as_uuid=True), nullable=False),
    Column("claimed_until", _timestamp(), nullable=True),
    PrimaryKeyConstraint("api_key_id", "key", "endpoint", name="idempotent_responses_pkey"),
    CheckConstraint(
        "(status is null) = (body is null) and (status is null) = (claimed_until is not null)",
        name="idempotent_responses_claim_or_response",
    ),
    Index("idempotent_responses_created", "created_at"),
)

# Events that arrived while their instance waited for a retry, in arrival order.
parked_events = Table(
    "parked_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), nullable=False),
    Column("instance_id", UUID(as_uuid=True), _instance_ref("parked_events"), nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("source", Text, nullable=False),
    Column("request_id", Text, nullable=True),
    Column("parked_at", _timestamp(), nullable=False, server_default=NOW),
    PrimaryKeyConstraint("id", name="parked_events_pkey"),
    UniqueConstraint("instance_id", "event_id", name="parked_events_instance_event"),
)

# Messages the worker dead-lettered, kept with why and what an operator did about them.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, Identity(always=True), nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("headers", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("value", LargeBinary, nullable=True),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=False),
    # What the message was about, where the worker could tell (for filtering).
    Column("event_id", Text, nullable=True),
    Column("event_type", Text, nullable=True),
    Column("workflow", Text, nullable=True),
    Column("business_key", Text, nullable=True),
    Column("instance_id", UUID(as_uuid=True), nullable=True),
    Column("first_seen_at", _timestamp(), nullable=False, server_default=NOW),
    Column("last_seen_at", _timestamp(), nullable=False, server_default=NOW),
    Column("seen_count", Integer, nullable=False, server_default="1"),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("resolved_at", _timestamp(), nullable=True),
    # The request id of the operator's replay or discard.
    Column("resolved_by", Text, nullable=True),
    Column("resolution", JSONB, nullable=True),
    PrimaryKeyConstraint("id", name="dead_letters_pkey"),
    # A redelivered batch records its dead letters once.
    UniqueConstraint("topic", "partition", "kafka_offset", name="dead_letters_source"),
    CheckConstraint("status in ('pending', 'replayed', 'discarded')", name="dead_letters_status"),
    Index("dead_letters_status", "status", "id"),
    Index("dead_letters_reason", "reason", "id"),
    Index("dead_letters_business_key", "workflow", "business_key"),
    Index("dead_letters_first_seen", "first_seen_at"),
)

# Durable jobs (bulk actions; workflow migrations): what to do, and progress counters.
jobs = Table(
    "jobs",
    metadata,
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("spec", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default="running"),
    Column("total", Integer, nullable=False, server_default="0"),
    Column("succeeded", Integer, nullable=False, server_default="0"),
    Column("skipped", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("request_id", Text, nullable=True),
    Column("created_at", _timestamp(), nullable=False, server_default=NOW),
    Column("updated_at", _timestamp(), nullable=False, server_default=NOW),
    Column("finished_at", _timestamp(), nullable=True),
    Column("error", JSONB, nullable=True),
    PrimaryKeyConstraint("id", name="jobs_pkey"),
    CheckConstraint(
        "status in ('running', 'completed', 'failed', 'cancelled')", name="jobs_status"
    ),
    Index("jobs_created", "created_at", "id"),
    Index("jobs_running", "created_at", postgresql_where=text("status = 'running'")),
)

# The instances a job targets, chosen when it was created; each applied at most once.
job_items = Table(
    "job_items",
    metadata,
    Column(
        "job_id",
        UUID(as_uuid=True),
        ForeignKey("jobs.id", ondelete="CASCADE", name="job_items_job_id_fkey"),
        nullable=False,
    ),
    Column("instance_id", UUID(as_uuid=True), nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("reason", Text, nullable=True),
    Column("done_at", _timestamp(), nullable=True),
    PrimaryKeyConstraint("job_id", "instance_id", name="job_items_pkey"),
    CheckConstraint(
        "status in ('pending', 'succeeded', 'skipped', 'failed')", name="job_items_status"
    ),
    Index(
        "job_items_pending", "job_id", "instance_id", postgresql_where=text("status = 'pending'")
    ),
)

# Operators signed in to the web console: only the SHA-256 of a session's token is stored.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", LargeBinary, nullable=False),
    Column(
        "api_key_id",
        UUID(as_uuid=True),
        ForeignKey("api_keys.id", ondelete="CASCADE", name="console_sessions_api_key_id_fkey"),
        nullable=False,
    ),
    Column("csrf_token", Text, nullable=False),
    Column("created_at", _timestamp(), nullable=False, server_default=NOW),
    Column("expires_at", _timestamp(), nullable=False),
    PrimaryKeyConstraint("token_hash", name="console_sessions_pkey"),
    Index("console_sessions_expires", "expires_at"),
    Index("console_sessions_api_key", "api_key_id"),
)

# Schedules (0010): one row per declared schedule, claimed ``for update skip locked`` by
# the schedule runners; ``fingerprint`` is the definition (cron/every/anchor/zone) that
# computed ``next_tick``.
schedules = Table(
    "schedules",
    metadata,
    Column("name", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("next_tick", _timestamp(), nullable=False),
    # The last scheduled tick fired (not a manual one).
    Column("last_tick", _timestamp(), nullable=True),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("updated_at", _timestamp(), nullable=False, server_default=NOW),
    PrimaryKeyConstraint("name", name="schedules_pkey"),
    # The runners' claim: due rows of running schedules, soonest first.
    Index("schedules_due", "next_tick", postgresql_where=text("not paused")),
)

# What each tick did: one row per tick fired or passed over (and per manual trigger).
# ``tick_id`` (the schedule's name and the tick's instant, or a manual trigger's own id)
# is unique: a tick is recorded once.
schedule_ticks = Table(
    "schedule_ticks",
    metadata,
    Column("id", BigInteger, Identity(always=True), nullable=False),
    Column("schedule", Text, nullable=False),
    Column("tick_id", Text, nullable=False),
    Column("tick", _timestamp(), nullable=False),
    Column("manual", Boolean, nullable=False, server_default=text("false")),
    Column("fired_at", _timestamp(), nullable=False),
    Column("outcome", Text, nullable=False),
    Column("instance_id", UUID(as_uuid=True), nullable=True),
    Column("message_id", UUID(as_uuid=True), nullable=True),
    Column("business_key", Text, nullable=True),
    Column("detail", Text, nullable=True),
    Column("lateness_seconds", Float, nullable=False, server_default=text("0")),
    Column("request_id", Text, nullable=True),
    PrimaryKeyConstraint("id", name="schedule_ticks_pkey"),
    UniqueConstraint("tick_id", name="schedule_ticks_tick_id_key"),
    CheckConstraint(
        "outcome in ('started', 'existing', 'conflict', 'published', 'skipped', 'failed')",
        name="schedule_ticks_outcome",
    ),
    # A schedule's ticks, newest first (history pages, the last outcome).
    Index("schedule_ticks_by_schedule", "schedule", "id"),
)

__all__ = [
    "api_keys",
    "console_sessions",
    "dead_letters",
    "history",
    "idempotent_responses",
    "inbox",
    "instances",
    "job_items",
    "jobs",
    "metadata",
    "outbox",
    "parked_events",
    "schedule_ticks",
    "schedules",
    "timers",
]
