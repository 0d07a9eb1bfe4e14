"""The dispatch outbox: pending hand-offs of matches to the inference engine."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Text, and_, cast, delete, func, insert, or_, select, update

from store.db import Connection, Row
from store.tables import dispatch_jobs, matches

# Postgres NOTIFY channel that wakes every process's dispatcher when a job is written.
CHANNEL = "dispatch_jobs"


async def start_run(conn: Connection, match_id: str, payload: dict[str, Any]) -> str:
    """Makes a new analysis run the match's current one and queues its hand-off.

    Call inside the transaction that changes the match, so that the job exists exactly when
    the change does. A job of an earlier run that no process is sending right now is dropped,
    so a reanalyze while queued hands the video over once.
    """
    analysis_id = str(uuid.uuid4())
    await conn.execute(
        delete(dispatch_jobs).where(
            dispatch_jobs.c.match_id == match_id,
            _unclaimed(),
        )
    )
    await conn.execute(
        update(matches).where(matches.c.id == match_id).values(analysis_id=analysis_id)
    )
    await conn.execute(
        insert(dispatch_jobs).values(
            match_id=match_id,
            analysis_id=analysis_id,
            payload={**payload, "match_id": match_id, "analysis_id": analysis_id},
        )
    )
    await conn.execute(select(func.pg_notify(CHANNEL, cast(match_id, Text))))
    return analysis_id


async def claim_due(conn: Connection, limit: int, lease_seconds: float) -> list[Row]:
    """Leases up to `limit` due jobs to the caller; other processes skip them until it ends."""
    due = (
        select(dispatch_jobs.c.id)
        .where(
            dispatch_jobs.c.next_attempt_at <= func.now(),
            _unclaimed(),
        )
        .order_by(dispatch_jobs.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return await conn.fetch_all(
        update(dispatch_jobs)
        .where(dispatch_jobs.c.id.in_(due.scalar_subquery()))
        .values(
            claimed_until=func.now() + timedelta(seconds=lease_seconds),
            attempts=dispatch_jobs.c.attempts + 1,
        )
        .returning(*dispatch_jobs.c)
    )


async def seconds_until_next_due(conn: Connection) -> float | None:
    """How long until the earliest job falls due (0 if one is due now), or None if none wait.

    A claimed job falls due again when its lease runs out (its sender may have died).
    """
    due_at = func.greatest(dispatch_jobs.c.next_attempt_at, dispatch_jobs.c.claimed_until)
    # Clamped here rather than with SQL greatest(), which skips NULLs: with no jobs at all it
    # would answer 0 and the dispatcher would query again at once, in a loop.
    seconds = await conn.fetch_value(select(func.extract("epoch", func.min(due_at) - func.now())))
    return None if seconds is None else max(0.0, float(seconds))


async def finish(conn: Connection, job: Row) -> bool:
    """Removes a job that was handled; False if it was no longer ours (lease lost)."""
    return bool(await conn.execute(delete(dispatch_jobs).where(_still_ours(job))))


async def retry_later(conn: Connection, job: Row, delay_seconds: float, error: str) -> None:
    await conn.execute(
        update(dispatch_jobs)
        .where(_still_ours(job))
        .values(
            claimed_until=None,
            last_error=error,
            next_attempt_at=func.now() + timedelta(seconds=delay_seconds),
        )
    )


async def release(conn: Connection, job_ids: list[str]) -> None:
    """Gives claimed jobs back (on shutdown) so another process sends them at once."""
    if job_ids:
        await conn.execute(
            update(dispatch_jobs)
            .where(dispatch_jobs.c.id.in_(job_ids))
            .values(claimed_until=None, attempts=dispatch_jobs.c.attempts - 1)
        )


def _unclaimed():
    """No process holds the job: never claimed, released, or its lease ran out."""
    return or_(dispatch_jobs.c.claimed_until.is_(None), dispatch_jobs.c.claimed_until < func.now())


def _still_ours(job: Row):
    return and_(
        dispatch_jobs.c.id == job["id"], dispatch_jobs.c.claimed_until == job["claimed_until"]
    )
