"""Operator API: dead letters kept in PostgreSQL, durable jobs, and the operator's indexes.

* ``dead_letters``: every message the worker dead-letters, byte for byte (value, key,
  headers) with where it came from (topic, partition, ``kafka_offset``: unique, so a redelivered
  batch records it once), why (reason, detail), what it was about where the worker could
  tell (event id and type, workflow, business key, instance), when it was first and last
  seen, and what an operator did with it (``pending``, ``replayed``, ``discarded``).
* ``jobs`` and ``job_items``: a durable job (a bulk action today, a workflow migration
  tomorrow) and the instances it targets, chosen once when it is created. Applying an
  item and marking it done commit together, so a job resumes after a crash without
  applying anything twice.
* Indexes: ``instances_data`` (GIN, ``jsonb_path_ops``) serves business-data filters
  (``data @> '{"customer_id": "C-7"}'``); ``instances_state_age`` serves "in this state
  for longer than", SLA breaches and the per-state counts of ``/v1/stats`` (an index-only
  scan: version and status are included); ``instances_running_age`` (partial: running
  instances only) serves "in this state for longer than" lists, longest first.

The three indexes lock writes to ``instances`` while they are built. On a large table,
build them beforehand without that lock, with the same definitions (the migration then
keeps them)::

    create index concurrently if not exists instances_data on instances
      using gin (data jsonb_path_ops);
    create index concurrently if not exists instances_state_age on instances
      (workflow, state, state_entered_at) include (version, status);
    create index concurrently if not exists instances_running_age on instances
      (state_entered_at, id) where status in ('active', 'retrying', 'failed');

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def _timestamp() -> sa.TIMESTAMP:
    return sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.execute(
        "create index if not exists instances_data on instances using gin (data jsonb_path_ops)"
    )
    op.execute(
        "create index if not exists instances_state_age on instances"
        " (workflow, state, state_entered_at) include (version, status)"
    )
    op.execute(
        "create index if not exists instances_running_age on instances (state_entered_at, id)"
        " where status in ('active', 'retrying', 'failed')"
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("kafka_offset", sa.BigInteger, nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=True),
        sa.Column("headers", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("value", sa.LargeBinary, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=True),
        sa.Column("event_type", sa.Text, nullable=True),
        sa.Column("workflow", sa.Text, nullable=True),
        sa.Column("business_key", sa.Text, nullable=True),
        sa.Column("instance_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("first_seen_at", _timestamp(), nullable=False, server_default=NOW),
        sa.Column("last_seen_at", _timestamp(), nullable=False, server_default=NOW),
        sa.Column("seen_count", sa.Integer, nullable=False, server_default="1"),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("resolved_at", _timestamp(), nullable=True),
        sa.Column("resolved_by", sa.Text, nullable=True),
        sa.Column("resolution", pg.JSONB, nullable=True),
        sa.UniqueConstraint("topic", "partition", "kafka_offset", name="dead_letters_source"),
        sa.CheckConstraint(
            "status in ('pending', 'replayed', 'discarded')", name="dead_letters_status"
        ),
    )
    op.create_index("dead_letters_status", "dead_letters", ["status", "id"])
    op.create_index("dead_letters_reason", "dead_letters", ["reason", "id"])
    op.create_index("dead_letters_business_key", "dead_letters", ["workflow", "business_key"])
    op.create_index("dead_letters_first_seen", "dead_letters", ["first_seen_at"])
    op.create_table(
        "jobs",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("spec", pg.JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="running"),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("succeeded", sa.Integer, nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("request_id", sa.Text, nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False, server_default=NOW),
        sa.Column("updated_at", _timestamp(), nullable=False, server_default=NOW),
        sa.Column("finished_at", _timestamp(), nullable=True),
        sa.Column("error", pg.JSONB, nullable=True),
        sa.CheckConstraint(
            "status in ('running', 'completed', 'failed', 'cancelled')", name="jobs_status"
        ),
    )
    op.create_index("jobs_created", "jobs", ["created_at", "id"])
    op.create_index(
        "jobs_running", "jobs", ["created_at"], postgresql_where=sa.text("status = 'running'")
    )
    op.create_table(
        "job_items",
        sa.Column(
            "job_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("instance_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("done_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "instance_id", name="job_items_pkey"),
        sa.CheckConstraint(
            "status in ('pending', 'succeeded', 'skipped', 'failed')", name="job_items_status"
        ),
    )
    op.create_index(
        "job_items_pending",
        "job_items",
        ["job_id", "instance_id"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("job_items")
    op.drop_table("jobs")
    op.drop_table("dead_letters")
    op.execute("drop index if exists instances_running_age")
    op.execute("drop index if exists instances_state_age")
    op.execute("drop index if exists instances_data")
