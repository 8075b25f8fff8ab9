"""Key reuse: a business key may pass from an ended instance to a newer one.

A workflow that declares ``key_reuse = "after_end"`` may start a new instance with the
business key of one that has completed or been cancelled (see ``engine.runtime``). The
old instance keeps its row and history and gives the key up:

* ``instances.key_released``: true on an ended instance whose key a newer instance took.
* ``instances_key_holder`` replaces the unique constraint
  ``instances_workflow_business_key``: (workflow, business key) is unique among the
  instances that hold their key (``where not key_released``), so one instance at a time
  holds it, and lookups by key find that one through this index.
* ``instances_released_keys`` (partial: released keys only, so small) lists the earlier
  instances of a key, newest first.

Adding the column is instant (a constant default). The unique index locks writes to
``instances`` while it is built; on a large table, add the column and build it
beforehand without that lock, with the same definition (the migration then keeps it)::

    alter table instances add column if not exists key_released boolean not null
      default false;
    create unique index concurrently if not exists instances_key_holder on instances
      (workflow, business_key) where not key_released;

The downgrade restores the unique constraint, which cannot hold once a key has been
reused: it refuses while any instance has given its key up (delete or rename those
instances' keys first).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "alter table instances add column if not exists key_released boolean not null default false"
    )
    op.execute(
        "create unique index if not exists instances_key_holder on instances"
        " (workflow, business_key) where not key_released"
    )
    op.drop_constraint("instances_workflow_business_key", "instances", type_="unique")
    op.create_index(
        "instances_released_keys",
        "instances",
        ["workflow", "business_key", "created_at"],
        postgresql_where=sa.text("key_released"),
    )


def downgrade() -> None:
    released = (
        op.get_bind()
        .execute(sa.text("select count(*) from instances where key_released"))
        .scalar_one()
    )
    if released:
        raise RuntimeError(
            f"cannot downgrade below 0007: {released} instance(s) gave their business key to "
            "a newer instance, and the unique constraint on (workflow, business_key) that "
            "0006 has would not hold; delete those instances (where key_released) first"
        )
    op.drop_index("instances_released_keys", table_name="instances")
    op.create_unique_constraint(
        "instances_workflow_business_key", "instances", ["workflow", "business_key"]
    )
    op.drop_index("instances_key_holder", table_name="instances")
    op.drop_column("instances", "key_released")
