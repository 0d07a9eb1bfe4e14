"""Measure a hand-off's retry budget from its first attempt; note attempts left unanswered

DISPATCH_MAX_SECONDS ran from the job's `created_at`, so a job queued while no process ran
could be given up on after its first refused attempt. Jobs already tried keep counting from
`created_at`, as before; the others start counting at their first claim. `maybe_taken` notes
that an attempt got no answer in time, so that the engine may have the job.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "dispatch_jobs", sa.Column("first_attempt_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute("UPDATE dispatch_jobs SET first_attempt_at = created_at WHERE attempts > 0")
    op.add_column(
        "dispatch_jobs",
        sa.Column("maybe_taken", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )


def downgrade() -> None:
    op.drop_column("dispatch_jobs", "maybe_taken")
    op.drop_column("dispatch_jobs", "first_attempt_at")
