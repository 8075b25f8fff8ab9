"""The outbox by instance: the console's instance page lists the messages an instance
published (``engine.store.instance_messages``), newest first.

* ``outbox_instance``: ``(instance_id, id)`` where ``instance_id`` is set. Without it the
  page scanned every outbox row kept for ``CONVEYOR_OUTBOX_RETENTION_HOURS``. It costs
  one more index entry per message written.

On a large outbox, build it first without blocking writes, then migrate:

    create index concurrently if not exists outbox_instance on outbox (instance_id, id)
    where instance_id is not null;

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "outbox_instance",
        "outbox",
        ["instance_id", "id"],
        postgresql_where=sa.text("instance_id is not null"),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("outbox_instance", table_name="outbox")
