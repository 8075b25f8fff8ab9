"""Runtime tables: instances, history, inbox, timers, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("workflow", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("business_key", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("data", pg.JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("start_key", sa.Text, nullable=True),
        sa.Column("error", pg.JSONB, nullable=True),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
        sa.Column("state_entered_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status in ('active', 'completed', 'failed', 'cancelled')", name="instances_status"
        ),
        sa.UniqueConstraint("workflow", "business_key", name="instances_workflow_business_key"),
    )
    # Start idempotency: one instance per (workflow, idempotency key).
    op.create_index(
        "instances_start_key",
        "instances",
        ["workflow", "start_key"],
        unique=True,
        postgresql_where=sa.text("start_key is not null"),
    )
    # List queries: filters + keyset order (created_at, id) / (updated_at, id).
    op.create_index("instances_created", "instances", ["created_at", "id"])
    op.create_index("instances_updated", "instances", ["updated_at", "id"])
    op.create_index("instances_workflow_state", "instances", ["workflow", "state", "created_at"])
    op.create_index("instances_status", "instances", ["status", "created_at"])
    op.create_index(
        "instances_business_key_prefix", "instances", [sa.text("business_key text_pattern_ops")]
    )

    op.create_table(
        "history",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "instance_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("instances.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("from_state", sa.Text, nullable=True),
        sa.Column("to_state", sa.Text, nullable=True),
        sa.Column("transition", sa.Text, nullable=True),
        sa.Column("payload", pg.JSONB, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("request_id", sa.Text, nullable=True),
        sa.Column("occurred_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index("history_instance", "history", ["instance_id", "id"])

    op.create_table(
        "inbox",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("instance_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("processed_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index("inbox_processed_at", "inbox", ["processed_at"])

    op.create_table(
        "timers",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "instance_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("instances.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("due_at", sa.TIMESTAMP(timezone=True), nullable=False),
        # A scheduler's lease: set when claimed, so that a crashed scheduler's timers
        # become claimable again once it expires.
        sa.Column("claimed_until", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
        sa.UniqueConstraint("instance_id", "name", name="timers_instance_name"),
    )
    op.create_index("timers_due", "timers", ["due_at"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("message_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("instance_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=True),
        sa.Column("headers", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
        sa.Column("published_at", sa.TIMESTAMP(timezone=True), nullable=True),
    )
    # The relay reads only unpublished rows, in id order.
    op.create_index(
        "outbox_pending", "outbox", ["id"], postgresql_where=sa.text("published_at is null")
    )


def downgrade() -> None:
    for table in ("outbox", "timers", "inbox", "history", "instances"):
        op.drop_table(table)
