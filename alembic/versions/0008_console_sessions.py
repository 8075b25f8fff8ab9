"""Console sessions: an operator signed in to the web console with an API key.

* ``console_sessions``: one row per signed-in browser. The cookie holds a random token;
  only its SHA-256 is stored (``token_hash``), like API keys. A session belongs to the
  key it was opened with (deleted with it; a revoked key's sessions stop working at
  once), carries its CSRF token and expires at ``expires_at``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.LargeBinary, nullable=False),
        sa.Column(
            "api_key_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.Text, nullable=False),
        sa.Column(
            "created_at",
            sa.TIMESTAMP(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("expires_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="console_sessions_pkey"),
    )
    op.create_index("console_sessions_expires", "console_sessions", ["expires_at"])
    op.create_index("console_sessions_api_key", "console_sessions", ["api_key_id"])


def downgrade() -> None:
    op.drop_table("console_sessions")
