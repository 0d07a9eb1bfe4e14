"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-12-03 19:11:36.135614
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "matches",
        sa.Column(
            "id",
            sa.UUID(as_uuid=False),
            server_default=sa.text("gen_random_uuid()"),
            nullable=False,
        ),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("original_name", sa.Text(), nullable=True),
        sa.Column("stored_name", sa.Text(), nullable=True),
        sa.Column("upload_url", sa.Text(), nullable=False),
        sa.Column("start_time", sa.Float(), nullable=True),
        sa.Column("end_time", sa.Float(), nullable=True),
        sa.Column("status", sa.Text(), server_default="UPLOADED", nullable=False),
        sa.Column("progress", sa.Integer(), server_default="0", nullable=False),
        sa.Column("stage", sa.Text(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("analysis_id", sa.UUID(as_uuid=False), nullable=True),
        sa.Column("live_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("highlight_reel_url", sa.Text(), nullable=True),
        sa.Column(
            "tracking_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True
        ),
        sa.Column(
            "team_colors", postgresql.JSONB(astext_type=sa.Text()), nullable=True
        ),
        sa.Column("heatmap_url", sa.Text(), nullable=True),
        sa.Column("thumbnail_url", sa.Text(), nullable=True),
        sa.Column("top_speed_kmh", sa.Float(), nullable=True),
        sa.Column("event_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("highlight_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("user_id", sa.UUID(as_uuid=False), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "matches_created_at_id_idx",
        "matches",
        [sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
        unique=False,
    )
    op.create_table(
        "dispatch_jobs",
        sa.Column(
            "id",
            sa.UUID(as_uuid=False),
            server_default=sa.text("gen_random_uuid()"),
            nullable=False,
        ),
        sa.Column("match_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("analysis_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["match_id"], ["matches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "dispatch_jobs_match_id_idx", "dispatch_jobs", ["match_id"], unique=False
    )
    op.create_index(
        "dispatch_jobs_next_attempt_at_idx",
        "dispatch_jobs",
        ["next_attempt_at"],
        unique=False,
    )
    op.create_table(
        "emotion_scores",
        sa.Column(
            "id",
            sa.UUID(as_uuid=False),
            server_default=sa.text("gen_random_uuid()"),
            nullable=False,
        ),
        sa.Column("match_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("timestamp", sa.Float(), nullable=False),
        sa.Column("audio_score", sa.Float(), nullable=False),
        sa.Column("motion_score", sa.Float(), nullable=False),
        sa.Column("context_weight", sa.Float(), nullable=False),
        sa.Column("final_score", sa.Float(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["match_id"], ["matches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "emotion_scores_match_id_timestamp_idx",
        "emotion_scores",
        ["match_id", "timestamp"],
        unique=False,
    )
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.UUID(as_uuid=False),
            server_default=sa.text("gen_random_uuid()"),
            nullable=False,
        ),
        sa.Column("match_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("timestamp", sa.Float(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("final_score", sa.Float(), nullable=False),
        sa.Column("commentary", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["match_id"], ["matches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "events_match_id_timestamp_idx",
        "events",
        ["match_id", "timestamp"],
        unique=False,
    )
    op.create_table(
        "highlights",
        sa.Column(
            "id",
            sa.UUID(as_uuid=False),
            server_default=sa.text("gen_random_uuid()"),
            nullable=False,
        ),
        sa.Column("match_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("start_time", sa.Float(), nullable=False),
        sa.Column("end_time", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=True),
        sa.Column("commentary", sa.Text(), nullable=True),
        sa.Column("video_url", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["match_id"], ["matches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "highlights_match_id_start_time_idx",
        "highlights",
        ["match_id", "start_time"],
        unique=False,
    )
    op.create_table(
        "live_updates",
        sa.Column("match_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["match_id"], ["matches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("match_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("live_updates")
    op.drop_index("highlights_match_id_start_time_idx", table_name="highlights")
    op.drop_table("highlights")
    op.drop_index("events_match_id_timestamp_idx", table_name="events")
    op.drop_table("events")
    op.drop_index("emotion_scores_match_id_timestamp_idx", table_name="emotion_scores")
    op.drop_table("emotion_scores")
    op.drop_index("dispatch_jobs_next_attempt_at_idx", table_name="dispatch_jobs")
    op.drop_index("dispatch_jobs_match_id_idx", table_name="dispatch_jobs")
    op.drop_table("dispatch_jobs")
    op.drop_index("matches_created_at_id_idx", table_name="matches")
    op.drop_table("matches")
