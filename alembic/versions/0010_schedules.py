"""Schedules: a row per declared schedule and a record per tick.

* ``schedules``: the next tick due (claimed by the schedule runners with ``for update
  skip locked`` through ``schedules_due``), the last tick fired, paused, and the
  fingerprint of the definition that computed ``next_tick``.
* ``schedule_ticks``: what each tick did (started, existing, conflict, published,
  skipped, failed), unique by ``tick_id``; ``schedule_ticks_by_schedule`` serves a
  schedule's history, newest first.

New tables only: nothing to backfill.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp() -> sa.TIMESTAMP:
    return sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("next_tick", _timestamp(), nullable=False),
        sa.Column("last_tick", _timestamp(), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("updated_at", _timestamp(), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("name", name="schedules_pkey"),
    )
    op.create_index(
        "schedules_due", "schedules", ["next_tick"], postgresql_where=sa.text("not paused")
    )
    op.create_table(
        "schedule_ticks",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("schedule", sa.Text(), nullable=False),
        sa.Column("tick_id", sa.Text(), nullable=False),
        sa.Column("tick", _timestamp(), nullable=False),
        sa.Column("manual", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("fired_at", _timestamp(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("instance_id", UUID(as_uuid=True), nullable=True),
        sa.Column("message_id", UUID(as_uuid=True), nullable=True),
        sa.Column("business_key", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("lateness_seconds", sa.Float(), nullable=False, server_default=sa.text("0")),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="schedule_ticks_pkey"),
        sa.UniqueConstraint("tick_id", name="schedule_ticks_tick_id_key"),
        sa.CheckConstraint(
            "outcome in ('started', 'existing', 'conflict', 'published', 'skipped', 'failed')",
            name="schedule_ticks_outcome",
        ),
    )
    op.create_index("schedule_ticks_by_schedule", "schedule_ticks", ["schedule", "id"])


def downgrade() -> None:
    op.drop_table("schedule_ticks")
    op.drop_table("schedules")
