"""Outbox wake-ups, API keys and idempotent HTTP responses.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def upgrade() -> None:
    # A wake-up hint for outbox relays: one NOTIFY per inserting statement, delivered at
    # commit, payload = the schema (tests run many schemas on one database). The table
    # stays the source of truth; relays also poll.
    op.execute(
        """
        create or replace function conveyor_outbox_notify() returns trigger
        language plpgsql as $$
        begin
          perform pg_notify('conveyor_outbox', tg_table_schema);
          return null;
        end $$
        """
    )
    op.execute(
        "create trigger outbox_notify after insert on outbox"
        " for each statement execute function conveyor_outbox_notify()"
    )

    op.create_table(
        "api_keys",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        # The first characters of the key, shown in listings and logs; never the secret.
        sa.Column("prefix", sa.Text, nullable=False, unique=True),
        # SHA-256 of the whole key (keys are 32 random bytes: a slow hash adds nothing).
        sa.Column("key_hash", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("scopes", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
        sa.Column("revoked_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.CheckConstraint(
            "scopes <@ array['read', 'write', 'admin']::text[]", name="api_keys_scopes"
        ),
    )

    # Idempotency-Key: the first response to a (key, endpoint) is stored and replayed.
    op.create_table(
        "idempotent_responses",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("endpoint", sa.Text, primary_key=True),
        sa.Column("request_hash", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index("idempotent_responses_created", "idempotent_responses", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotent_responses")
    op.drop_table("api_keys")
    op.execute("drop trigger if exists outbox_notify on outbox")
    op.execute("drop function if exists conveyor_outbox_notify()")
