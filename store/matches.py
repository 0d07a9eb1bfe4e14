"""Queries on matches and their results. Each function takes a connection first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    tuple_,
    union_all,
    update,
)

from store.db import Connection, Row
from store.tables import emotion_scores, events, highlights, matches

# What a list item carries: every column but the (possibly several MB) tracking data.
LIST_COLUMNS = [column for column in matches.c if column.name != "tracking_data"]

# Derived fields that a new analysis starts without.
CLEARED_RESULTS = {
    "duration": None,
    "summary": None,
    "highlight_reel_url": None,
    "tracking_data": None,
    "team_colors": None,
    "heatmap_url": None,
    "thumbnail_url": None,
    "top_speed_kmh": None,
    "event_count": 0,
    "highlight_count": 0,
    "failure_reason": None,
    "stage": None,
}


async def insert_match(conn: Connection, **values: Any) -> Row:
    return await conn.fetch_one(insert(matches).values(**values).returning(*matches.c))


async def get_match_detail(conn: Connection, match_id: str) -> Row | None:
    """The match with its tracking data as JSON text (passed through, never parsed)."""
    tracking = cast(matches.c.tracking_data, Text).label("tracking_data")
    return await conn.fetch_one(select(*LIST_COLUMNS, tracking).where(matches.c.id == match_id))


_RUN_STATE = select(matches.c.id, matches.c.status, matches.c.analysis_id).where(
    matches.c.id == bindparam("match_id")
)
_RUN_STATE_LOCKED = _RUN_STATE.with_for_update()


async def get_run_state(conn: Connection, match_id: str, *, lock: bool = False) -> Row | None:
    """Just what a callback needs to know about a match: its status and current run."""
    query = _RUN_STATE_LOCKED if lock else _RUN_STATE
    return await conn.fetch_one(query, {"match_id": match_id})


async def stored_names(conn: Connection, names: list[str]) -> set[str]:
    """Which of `names` are the stored videos of matches."""
    rows = await conn.fetch_all(
        select(matches.c.stored_name).where(matches.c.stored_name.in_(names))
    )
    return {row["stored_name"] for row in rows}


async def list_matches(
    conn: Connection, *, limit: int | None = None, before: str | None = None
) -> list[Row]:
    """Newest first; `before` is the id of the last match of the previous page.

    Raises LookupError when `before` names no match.
    """
    query = select(*LIST_COLUMNS).order_by(matches.c.created_at.desc(), matches.c.id.desc())
    if before is not None:
        anchor = await conn.fetch_one(
            select(matches.c.created_at, matches.c.id).where(matches.c.id == before)
        )
        if anchor is None:
            raise LookupError(before)
        query = query.where(
            tuple_(matches.c.created_at, matches.c.id) < tuple_(anchor["created_at"], anchor["id"])
        )
    if limit is not None:
        query = query.limit(limit)
    return await conn.fetch_all(query)


async def get_results(conn: Connection, match_id: str) -> dict[str, list[Row]]:
    """The stored events, highlights and emotion scores of a match, each in contract order."""
    return {
        "events": await conn.fetch_all(
            select(*events.c).where(events.c.match_id == match_id).order_by(events.c.timestamp)
        ),
        "highlights": await conn.fetch_all(
            select(*highlights.c)
            .where(highlights.c.match_id == match_id)
            .order_by(highlights.c.start_time)
        ),
        "emotion_scores": await conn.fetch_all(
            select(*emotion_scores.c)
            .where(emotion_scores.c.match_id == match_id)
            .order_by(emotion_scores.c.timestamp)
        ),
    }


# A match's columns naming files the inference engine wrote for it.
OUTPUT_URL_COLUMNS = (matches.c.highlight_reel_url, matches.c.heatmap_url, matches.c.thumbnail_url)


async def output_urls(conn: Connection, match_id: str) -> list[str]:
    """The URLs of what the engine produced for the match: reel, heatmap, thumbnail, clips."""
    row = await conn.fetch_one(select(*OUTPUT_URL_COLUMNS).where(matches.c.id == match_id))
    clips = await conn.fetch_all(
        select(highlights.c.video_url).where(highlights.c.match_id == match_id)
    )
    urls = [*(row.values() if row else ()), *(clip["video_url"] for clip in clips)]
    return [url for url in urls if url]


async def files_in_use(conn: Connection, urls: list[str], names: list[str]) -> set[str]:
    """Which of these URLs some match still refers to (as its video or as an output), and
    which of these file names are the stored video of a match."""
    if not urls and not names:
        return set()
    url_columns = (matches.c.upload_url, *OUTPUT_URL_COLUMNS)
    query = union_all(
        *(select(column.label("ref")).where(column.in_(urls)) for column in url_columns),
        select(highlights.c.video_url.label("ref")).where(highlights.c.video_url.in_(urls)),
        select(matches.c.stored_name.label("ref")).where(matches.c.stored_name.in_(names)),
    )
    return {row["ref"] for row in await conn.fetch_all(query)}


async def delete_results(conn: Connection, match_id: str) -> None:
    for table in (events, highlights, emotion_scores):
        await conn.execute(delete(table).where(table.c.match_id == match_id))


async def update_match(conn: Connection, match_id: str, **values: Any) -> Row | None:
    return await conn.fetch_one(
        update(matches)
        .where(matches.c.id == match_id)
        .values(updated_at=func.now(), **values)
        .returning(*LIST_COLUMNS)
    )


async def delete_match(conn: Connection, match_id: str) -> Row | None:
    """Deletes the match and (by cascade) its results and jobs; returns the deleted row."""
    return await conn.fetch_one(
        delete(matches).where(matches.c.id == match_id).returning(*LIST_COLUMNS)
    )


async def totals(conn: Connection) -> Row:
    return await conn.fetch_one(
        select(
            func.count().label("total_matches"),
            func.coalesce(func.sum(matches.c.event_count), 0).label("total_events"),
            func.coalesce(func.sum(matches.c.highlight_count), 0).label("total_highlights"),
            func.coalesce(func.sum(matches.c.duration), 0).label("total_duration"),
        )
    )
