"""Scoped deduplication: the inbox per instance, Idempotency-Key claims per API key.

* ``inbox``: keyed by (instance_id, event_id) instead of event_id alone. An event id is
  unique per instance: a redelivery to the same instance is a duplicate, the same id for
  another instance is another event (so one client cannot squat another's event ids).
  Rows without an instance (never written by the runtime) cannot deduplicate anything
  under that rule and are dropped.
* ``idempotent_responses``: keyed by (api_key_id, key, endpoint), so one API key's stored
  responses never answer another's requests. A row is first a *claim* (status and body
  null, ``claimed_until`` the claimer's lease), then the stored response. Existing rows
  belong to no known API key and are dropped: they only served retries.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("delete from inbox where instance_id is null")
    op.alter_column("inbox", "instance_id", nullable=False)
    op.drop_constraint("inbox_pkey", "inbox", type_="primary")
    # Also the index of the runtime's lookup by (instance_id, event_id) pairs; retention
    # keeps using inbox_processed_at.
    op.create_primary_key("inbox_pkey", "inbox", ["instance_id", "event_id"])

    op.execute("delete from idempotent_responses")
    op.drop_constraint("idempotent_responses_pkey", "idempotent_responses", type_="primary")
    op.add_column(
        "idempotent_responses", sa.Column("api_key_id", pg.UUID(as_uuid=True), nullable=False)
    )
    # Set while the row is a pending claim: after it passes, a retry may take the claim over
    # (the claimer crashed or lost its connection before storing the response).
    op.add_column(
        "idempotent_responses",
        sa.Column("claimed_until", sa.TIMESTAMP(timezone=True), nullable=True),
    )
    op.alter_column("idempotent_responses", "status", nullable=True)
    op.alter_column("idempotent_responses", "body", nullable=True)
    op.create_primary_key(
        "idempotent_responses_pkey", "idempotent_responses", ["api_key_id", "key", "endpoint"]
    )
    op.create_check_constraint(
        "idempotent_responses_claim_or_response",
        "idempotent_responses",
        "(status is null) = (body is null) and (status is null) = (claimed_until is not null)",
    )


def downgrade() -> None:
    op.drop_constraint(
        "idempotent_responses_claim_or_response", "idempotent_responses", type_="check"
    )
    op.drop_constraint("idempotent_responses_pkey", "idempotent_responses", type_="primary")
    op.execute("delete from idempotent_responses where status is null")
    # The oldest response per (key, endpoint) keeps the key.
    op.execute(
        "delete from idempotent_responses r using idempotent_responses o"
        " where r.key = o.key and r.endpoint = o.endpoint"
        " and (o.created_at, o.api_key_id) < (r.created_at, r.api_key_id)"
    )
    op.alter_column("idempotent_responses", "status", nullable=False)
    op.alter_column("idempotent_responses", "body", nullable=False)
    op.drop_column("idempotent_responses", "claimed_until")
    op.drop_column("idempotent_responses", "api_key_id")
    op.create_primary_key("idempotent_responses_pkey", "idempotent_responses", ["key", "endpoint"])

    op.drop_constraint("inbox_pkey", "inbox", type_="primary")
    # Event ids were global: one row per id survives (the earliest processed).
    op.execute(
        "delete from inbox r using inbox o where r.event_id = o.event_id"
        " and (o.processed_at, o.instance_id) < (r.processed_at, r.instance_id)"
    )
    op.create_primary_key("inbox_pkey", "inbox", ["event_id"])
    op.alter_column("inbox", "instance_id", nullable=True)
