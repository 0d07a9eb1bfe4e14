"""Keep the remote video of a URL intake apart from upload_url

`complete` may replace `upload_url` with the engine's own copy (`videoUrl`); a reanalysis
hands the original remote video over again, with its clip window.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("matches", sa.Column("source_url", sa.Text(), nullable=True))
    op.execute("UPDATE matches SET source_url = upload_url WHERE stored_name IS NULL")


def downgrade() -> None:
    op.drop_column("matches", "source_url")
