"""History retention: an index of ended instances by when they ended.

The retention service (``engine.store.retention.prune_history``, with
``CONVEYOR_HISTORY_RETENTION_DAYS`` set) walks completed and cancelled instances in
(updated_at, id) order, up to a cutoff, and deletes their history in small batches. This
partial index serves that walk and holds only ended instances, so active ones (the hot
rows) pay nothing for it beyond the index entry written when they end.

Building it locks writes to ``instances`` while it runs. On a large table, build it
beforehand without that lock, with the same definition (the migration then keeps it)::

    create index concurrently if not exists instances_ended on instances (updated_at, id)
      where status in ('completed', 'cancelled');

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "create index if not exists instances_ended on instances (updated_at, id)"
        " where status in ('completed', 'cancelled')"
    )


def downgrade() -> None:
    op.execute("drop index if exists instances_ended")
