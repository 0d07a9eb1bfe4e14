"""Compress tracking data with lz4 where the server supports it

A full match's tracking data is several MB of JSONB; lz4 stores it about twice as fast as
the default pglz. Servers built without lz4 keep the default.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DO $$
        BEGIN
            ALTER TABLE matches ALTER COLUMN tracking_data SET COMPRESSION lz4;
        EXCEPTION WHEN feature_not_supported THEN
            RAISE NOTICE 'lz4 not supported by this server: tracking data keeps pglz';
        END $$
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE matches ALTER COLUMN tracking_data SET COMPRESSION DEFAULT")
