"""Writes of what the inference engine reports: progress, and the final results."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    column,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.sql.expression import Select

from store.db import Connection, Row
from store.jobs import handed_over
from store.live_updates import next_number, numbered_and_logged
from store.matches import delete_results
from store.tables import emotion_scores, events, highlights, matches


def _open_to_reports(named_run: bool):
    """The match, unless its run has ended (COMPLETED or FAILED: a report arriving after the
    end is a straggler), and only while the named run (if any) is its current one."""
    condition = and_(
        matches.c.id == bindparam("match_id"),
        matches.c.status != "COMPLETED",
        matches.c.status != "FAILED",
    )
    if named_run:
        condition = and_(condition, matches.c.analysis_id == bindparam("analysis_id"))
    return condition


def _progress_moved(named_run: bool) -> Select:
    """Moves a run forward and numbers the `progress` update it makes, logging it for catch-up;
    and ends the run's pending hand-off (the engine reporting on it has the job)."""
    moved = (
        next_number(
            status="PROCESSING",
            progress=func.greatest(matches.c.progress, bindparam("progress", type_=Integer)),
            stage=func.coalesce(bindparam("stage", type_=Text), matches.c.stage),
            failure_reason=None,
            updated_at=func.now(),
        )
        .where(_open_to_reports(named_run))
        .returning(matches.c.id, matches.c.analysis_id, matches.c.progress, matches.c.live_seq)
        .cte("moved")
    )
    # The update the watchers get: the stage only when the engine reported one.
    payload = func.jsonb_strip_nulls(
        func.jsonb_build_object(
            literal("matchId"),
            moved.c.id,
            literal("progress"),
            moved.c.progress,
            literal("stage"),
            cast(bindparam("stage"), Text),
        )
    )
    return numbered_and_logged(moved, kind=literal("progress"), payload=payload).add_cte(
        handed_over(moved.c.id, moved.c.analysis_id, named_run).cte("handed_over")
    )


def _failed(named_run: bool) -> Select:
    """Marks a run FAILED and ends its pending hand-off."""
    failed = (
        update(matches)
        .where(_open_to_reports(named_run))
        .values(status="FAILED", failure_reason=bindparam("reason"), updated_at=func.now())
        .returning(matches.c.id, matches.c.analysis_id)
        .cte("failed")
    )
    return select(failed.c.id).add_cte(
        handed_over(failed.c.id, failed.c.analysis_id, named_run).cte("handed_over")
    )


def _reported(named_run: bool) -> Select:
    """The match's current run; ends its pending hand-off if the report is for it (a report
    naming another run ends nothing)."""
    run = select(matches.c.analysis_id).where(matches.c.id == bindparam("match_id")).cte("run")
    ended = handed_over(bindparam("match_id"), run.c.analysis_id, named_run)
    if named_run:
        ended = ended.where(run.c.analysis_id == bindparam("analysis_id"))
    return select(run.c.analysis_id).add_cte(ended.cte("handed_over"))


# Templates (compiled once): progress callbacks are the hottest path of the service.
_SET_PROGRESS = {named_run: _progress_moved(named_run) for named_run in (False, True)}
_SET_FAILED = {named_run: _failed(named_run) for named_run in (False, True)}
_REPORTED = {named_run: _reported(named_run) for named_run in (False, True)}


async def set_progress(
    conn: Connection,
    match_id: str,
    analysis_id: str | None,
    progress: int,
    stage: str | None,
    keep: int,
) -> Row | None:
    """Moves a running analysis forward: PROCESSING, progress never lower than before; logs
    the `progress` update for the watchers (the catch-up log keeping its newest `keep`); and
    ends the run's pending hand-off (`jobs.handed_over`): all in one statement.

    Returns `progress`, the update's `live_seq` and its `payload`. Changes nothing (and
    returns None) for an unknown match, another run, or a match that already COMPLETED.
    """
    return await conn.fetch_one(
        _SET_PROGRESS[analysis_id is not None],
        {
            "match_id": match_id,
            "analysis_id": analysis_id,
            "progress": progress,
            "stage": stage,
            "keep": keep,
        },
    )


async def set_failed(
    conn: Connection, match_id: str, analysis_id: str | None, reason: str
) -> Row | None:
    """Marks a running analysis FAILED (never a COMPLETED one) and ends its pending hand-off."""
    return await conn.fetch_one(
        _SET_FAILED[analysis_id is not None],
        {"match_id": match_id, "analysis_id": analysis_id, "reason": reason},
    )


async def reported(conn: Connection, match_id: str, analysis_id: str | None) -> Row | None:
    """A report (live event, tracking) on the match's run `analysis_id` (None: its current
    one) came in: returns the match's current `analysis_id` (no row for an unknown match),
    and ends that run's pending hand-off if it is the current one, in one statement."""
    return await conn.fetch_one(
        _REPORTED[analysis_id is not None], {"match_id": match_id, "analysis_id": analysis_id}
    )


async def replace_results(
    conn: Connection,
    match_id: str,
    *,
    events_rows: list[dict[str, Any]],
    highlight_rows: list[dict[str, Any]],
    emotion_rows: list[dict[str, Any]],
    match_values: dict[str, Any],
) -> None:
    """Stores a run's final results in place of any earlier ones (call inside a transaction).

    Rows go in as one JSON document per table, expanded by `jsonb_to_recordset`, so a full
    match (thousands of rows) costs three statements, not thousands.
    """
    await delete_results(conn, match_id)
    batches = ((events, events_rows), (highlights, highlight_rows), (emotion_scores, emotion_rows))
    for table, rows in batches:
        if rows:
            await conn.execute(_bulk_insert(table, match_id, rows))
    await conn.execute(
        update(matches)
        .where(matches.c.id == match_id)
        .values(
            status="COMPLETED",
            progress=100,
            failure_reason=None,
            event_count=len(events_rows),
            highlight_count=len(highlight_rows),
            updated_at=func.now(),
            **match_values,
        )
    )


def _bulk_insert(table: Table, match_id: str, rows: list[dict[str, Any]]):
    names = list(rows[0])
    record = (
        func.jsonb_to_recordset(cast(bindparam("rows", rows), JSONB))
        .table_valued(*(column(name, _record_type(table, name)) for name in names))
        .render_derived(name="record", with_types=True)
    )
    owner = cast(bindparam("match_id", match_id), UUID(as_uuid=False)).label("match_id")
    source = select(owner, *record.c)
    return insert(table).from_select(["match_id", *names], source)


def _record_type(table: Table, name: str):
    return Text if isinstance(table.c[name].type, Text) else Float
