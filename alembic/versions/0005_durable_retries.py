"""Durable retries: a ``retrying`` status and the events parked behind a retry.

A failing step no longer sleeps in the caller: the instance waits as ``retrying`` with a
``conveyor.retry`` timer (an ordinary row of ``timers``), and events that arrive meanwhile
wait in ``parked_events`` in arrival order, until the retry applies them (see
``engine.retries``). A redelivered event is parked once: (instance_id, event_id) is unique.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def upgrade() -> None:
    op.drop_constraint("instances_status", "instances", type_="check")
    op.create_check_constraint(
        "instances_status",
        "instances",
        "status in ('active', 'retrying', 'completed', 'failed', 'cancelled')",
    )
    op.create_table(
        "parked_events",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column(
            "instance_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("instances.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("payload", pg.JSONB, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=True),
        sa.Column("parked_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
        sa.UniqueConstraint("instance_id", "event_id", name="parked_events_instance_event"),
    )


def downgrade() -> None:
    op.drop_table("parked_events")
    op.execute("update instances set status = 'failed' where status = 'retrying'")
    op.drop_constraint("instances_status", "instances", type_="check")
    op.create_check_constraint(
        "instances_status",
        "instances",
        "status in ('active', 'completed', 'failed', 'cancelled')",
    )
