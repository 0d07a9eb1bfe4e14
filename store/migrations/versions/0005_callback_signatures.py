"""Bind each callback signature to the match it was first used on

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callback_signatures",
        sa.Column("signature", sa.Text(), primary_key=True),
        sa.Column("match_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("callback_signatures_seen_at_idx", "callback_signatures", ["seen_at"])


def downgrade() -> None:
    op.drop_table("callback_signatures")
