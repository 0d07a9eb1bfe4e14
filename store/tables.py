"""The database schema, declared once. Alembic migrations are written against this."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

UUID_PK = dict(primary_key=True, server_default=text("gen_random_uuid()"))


def _created_at() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


def _match_fk(**kwargs: object) -> Column:
    return Column(
        "match_id",
        UUID(as_uuid=False),
        ForeignKey("matches.id", ondelete="CASCADE"),
        nullable=False,
        **kwargs,
    )


matches = Table(
    "matches",
    metadata,
    Column("id", UUID(as_uuid=False), **UUID_PK),
    Column("title", Text),
    Column("original_name", Text),
    # The file's name inside UPLOAD_DIR (server-generated); null for URL intake.
    Column("stored_name", Text),
    Column("upload_url", Text, nullable=False),
    # For URL intake: the remote video and clip window handed to inference (`upload_url`
    # may later name the engine's own copy, given as `videoUrl` by `complete`).
    Column("source_url", Text),
    Column("start_time", Float),
    Column("end_time", Float),
    Column("status", Text, nullable=False, server_default="UPLOADED"),
    Column("progress", Integer, nullable=False, server_default="0"),
    Column("stage", Text),
    Column("failure_reason", Text),
    # The current analysis run; callbacks naming another run are refused.
    Column("analysis_id", UUID(as_uuid=False)),
    # Last sequence number given to a live update of this match (see live_updates).
    Column("live_seq", BigInteger, nullable=False, server_default="0"),
    Column("duration", Float),
    Column("summary", Text),
    Column("highlight_reel_url", Text),
    Column("tracking_data", JSONB),
    Column("team_colors", JSONB),
    Column("heatmap_url", Text),
    Column("thumbnail_url", Text),
    Column("top_speed_kmh", Float),
    # Kept with the results by `complete`, so the polled list never counts rows.
    Column("event_count", Integer, nullable=False, server_default="0"),
    Column("highlight_count", Integer, nullable=False, server_default="0"),
    Column("user_id", UUID(as_uuid=False)),
    _created_at(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("matches_created_at_id_idx", text("created_at DESC"), text("id DESC")),
)

events = Table(
    "events",
    metadata,
    Column("id", UUID(as_uuid=False), **UUID_PK),
    _match_fk(),
    Column("timestamp", Float, nullable=False),
    Column("type", Text, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("final_score", Float, nullable=False),
    Column("commentary", Text),
    _created_at(),
    Index("events_match_id_timestamp_idx", "match_id", "timestamp"),
)

highlights = Table(
    "highlights",
    metadata,
    Column("id", UUID(as_uuid=False), **UUID_PK),
    _match_fk(),
    Column("start_time", Float, nullable=False),
    Column("end_time", Float, nullable=False),
    Column("score", Float, nullable=False),
    Column("event_type", Text),
    Column("commentary", Text),
    Column("video_url", Text),
    _created_at(),
    Index("highlights_match_id_start_time_idx", "match_id", "start_time"),
)

emotion_scores = Table(
    "emotion_scores",
    metadata,
    Column("id", UUID(as_uuid=False), **UUID_PK),
    _match_fk(),
    Column("timestamp", Float, nullable=False),
    Column("audio_score", Float, nullable=False),
    Column("motion_score", Float, nullable=False),
    Column("context_weight", Float, nullable=False),
    Column("final_score", Float, nullable=False),
    _created_at(),
    Index("emotion_scores_match_id_timestamp_idx", "match_id", "timestamp"),
)

# Transactional outbox: one row per pending hand-off to the inference engine, written in the
# same transaction as the match change that asks for it, sent by whichever process claims it,
# deleted once the engine accepted it (or gave up on).
dispatch_jobs = Table(
    "dispatch_jobs",
    metadata,
    Column("id", UUID(as_uuid=False), **UUID_PK),
    _match_fk(),
    Column("analysis_id", UUID(as_uuid=False), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # Set by the first claim: the retry budget (DISPATCH_MAX_SECONDS) runs from here, not from
    # `created_at`, so time spent queued while no process ran does not count against it.
    Column("first_attempt_at", DateTime(timezone=True)),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # A claim is a lease: a process that dies mid-send loses it when it expires.
    Column("claimed_until", DateTime(timezone=True)),
    # An attempt got no answer in time: the engine may have taken the job all the same.
    Column("maybe_taken", Boolean, nullable=False, server_default=text("false")),
    Column("last_error", Text),
    _created_at(),
    Index("dispatch_jobs_next_attempt_at_idx", "next_attempt_at"),
    Index("dispatch_jobs_match_id_idx", "match_id"),
)

# Live updates of the current run, numbered per match, for clients that join late or resume.
live_updates = Table(
    "live_updates",
    metadata,
    _match_fk(primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    _created_at(),
)
