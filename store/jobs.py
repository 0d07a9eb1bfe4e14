"""The dispatch outbox: pending hand-offs of matches to the inference engine.

Every statement is a template (values as `bindparam()`s) compiled once: the dispatcher runs
them for every job, and compiling each anew would cost more than running it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    Interval,
    and_,
    bindparam,
    case,
    cast,
    delete,
    extract,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.expression import ColumnElement, Delete

from store.db import Connection, Row
from store.tables import dispatch_jobs, matches

# Postgres NOTIFY channel that wakes every process's dispatcher when a job is written. The
# payload is always empty, so Postgres folds the notifications of one transaction into one.
CHANNEL = "dispatch_jobs"

_UNCLAIMED = or_(
    dispatch_jobs.c.claimed_until.is_(None), dispatch_jobs.c.claimed_until < func.now()
)
_STILL_OURS = and_(
    dispatch_jobs.c.id == bindparam("job_id"),
    dispatch_jobs.c.claimed_until == bindparam("job_claimed_until"),
)

_DROP_JOBS_OF_MATCH = delete(dispatch_jobs).where(dispatch_jobs.c.match_id == bindparam("match_id"))
_SET_RUN = (
    update(matches)
    .where(matches.c.id == bindparam("match_id"))
    .values(analysis_id=bindparam("analysis_id"))
)
_INSERT_JOB = insert(dispatch_jobs).values(
    match_id=bindparam("match_id"),
    analysis_id=bindparam("analysis_id"),
    payload=bindparam("payload", type_=JSONB),
)
_NOTIFY = select(func.pg_notify(CHANNEL, ""))

_CLAIM_DUE = (
    update(dispatch_jobs)
    .where(
        dispatch_jobs.c.id.in_(
            select(dispatch_jobs.c.id)
            .where(dispatch_jobs.c.next_attempt_at <= func.now(), _UNCLAIMED)
            .order_by(dispatch_jobs.c.next_attempt_at)
            .limit(bindparam("limit", type_=Integer))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(
        claimed_until=func.now() + bindparam("lease", type_=Interval),
        attempts=dispatch_jobs.c.attempts + 1,
        first_attempt_at=func.coalesce(dispatch_jobs.c.first_attempt_at, func.now()),
    )
    .returning(
        *dispatch_jobs.c,
        # By the database's clock, which the process's may not agree with.
        cast(extract("epoch", func.now() - dispatch_jobs.c.first_attempt_at), Float).label(
            "elapsed"
        ),
    )
)

# A claimed job falls due again when its lease runs out (its sender may have died).
_SECONDS_UNTIL_NEXT_DUE = select(
    func.extract(
        "epoch",
        func.min(func.greatest(dispatch_jobs.c.next_attempt_at, dispatch_jobs.c.claimed_until))
        - func.now(),
    )
)

_RETRY_LATER = (
    update(dispatch_jobs)
    .where(_STILL_OURS)
    .values(
        claimed_until=None,
        last_error=bindparam("error"),
        next_attempt_at=func.now() + bindparam("delay", type_=Interval),
        maybe_taken=or_(dispatch_jobs.c.maybe_taken, bindparam("unanswered", type_=Boolean)),
    )
)


def _finish(condition, **values: Any):
    """One statement: delete the job if still ours, and update its match if that run is current.

    A job whose lease was lost (another process holds it now) or that a callback ended changes
    nothing. The match is locked before the job, as reanalyze and the callbacks lock them:
    taken the other way round, the two deadlocked.
    """
    match = (
        select(matches.c.id)
        .where(matches.c.id == bindparam("match_id"))
        .with_for_update()
        .cte("match")
    )
    done = (
        delete(dispatch_jobs)
        .where(_STILL_OURS, dispatch_jobs.c.match_id == select(match.c.id).scalar_subquery())
        .returning(dispatch_jobs.c.match_id, dispatch_jobs.c.analysis_id)
        .cte("done")
    )
    return (
        update(matches)
        .where(
            matches.c.id == done.c.match_id, matches.c.analysis_id == done.c.analysis_id, condition
        )
        .values(updated_at=func.now(), **values)
    )


_FINISH_ACCEPTED = _finish(matches.c.status == "UPLOADED", status="PROCESSING")
_FINISH_FAILED = _finish(
    matches.c.status != "COMPLETED", status="FAILED", failure_reason=bindparam("reason")
)


def handed_over(match_id: ColumnElement, analysis_id: ColumnElement, named_run: bool) -> Delete:
    """Deletes the pending hand-off of that run: the engine reported on it, so it has the job.

    For the statements of callbacks, which learn the run as they apply the report. A sender
    holding the job at that moment then finds it gone, and its finish or retry changes nothing.
    A job never sent stays: the report cannot come from it. A report that names no run may
    also come from the run before a reanalyze, so it ends the job only while the engine may
    have it (being sent, or an attempt left unanswered), not one the engine refused.
    """
    may_have_it = dispatch_jobs.c.first_attempt_at.is_not(None)
    if not named_run:
        may_have_it = and_(
            may_have_it,
            or_(dispatch_jobs.c.maybe_taken, dispatch_jobs.c.claimed_until > func.now()),
        )
    return delete(dispatch_jobs).where(
        dispatch_jobs.c.match_id == match_id,
        dispatch_jobs.c.analysis_id == analysis_id,
        may_have_it,
    )


_HANDED_OVER = {
    named_run: handed_over(bindparam("match_id"), bindparam("analysis_id"), named_run)
    for named_run in (False, True)
}


async def start_run(conn: Connection, match_id: str, payload: dict[str, Any]) -> str:
    """Makes a new analysis run the match's current one and queues its hand-off.

    Call inside the transaction that changes the match, so that the job exists exactly when
    the change does. Jobs of earlier runs are dropped: a reanalyze while a job is queued
    hands the video over once, and an old job being sent right now is finished by its sender
    without touching the match (its run is no longer current).
    """
    analysis_id = str(uuid.uuid4())
    run = {"match_id": match_id, "analysis_id": analysis_id}
    await conn.execute(_DROP_JOBS_OF_MATCH, run)
    await conn.execute(_SET_RUN, run)
    await conn.execute(_INSERT_JOB, {**run, "payload": {**payload, **run}})
    await conn.execute(_NOTIFY, {})
    return analysis_id


async def claim_due(conn: Connection, limit: int, lease_seconds: float) -> list[Row]:
    """Leases up to `limit` due jobs to the caller; other processes skip them until it ends.

    Each row also has `elapsed`: seconds since the job's first attempt (0 on the first).
    """
    return await conn.fetch_all(
        _CLAIM_DUE, {"limit": limit, "lease": timedelta(seconds=lease_seconds)}
    )


async def seconds_until_next_due(conn: Connection) -> float | None:
    """How long until the earliest job falls due (0 if one is due now), or None if none wait."""
    seconds = await conn.fetch_value(_SECONDS_UNTIL_NEXT_DUE, {})
    return None if seconds is None else max(float(seconds), 0.0)


async def finish_accepted(conn: Connection, job: Row) -> None:
    """Removes a job the engine accepted; its match, still waiting on this run, is PROCESSING."""
    await conn.execute(_FINISH_ACCEPTED, _ours(job))


async def finish_failed(conn: Connection, job: Row, reason: str) -> bool:
    """Removes a job given up on and marks its run FAILED; False if the run is not current."""
    return bool(await conn.execute(_FINISH_FAILED, {**_ours(job), "reason": reason}))


async def end_dispatch(
    conn: Connection, match_id: str, analysis_id: str, *, named_run: bool
) -> None:
    """Drops the pending hand-off of a run the engine has reported on (see `handed_over`)."""
    await conn.execute(_HANDED_OVER[named_run], {"match_id": match_id, "analysis_id": analysis_id})


async def retry_later(
    conn: Connection, job: Row, delay_seconds: float, error: str, *, unanswered: bool
) -> None:
    """Gives the job back until `delay_seconds` from now; `unanswered` when the attempt got
    no answer in time (the engine may have taken the job)."""
    await conn.execute(
        _RETRY_LATER,
        {
            **_ours(job),
            "error": error,
            "delay": timedelta(seconds=delay_seconds),
            "unanswered": unanswered,
        },
    )


async def release(conn: Connection, claimed: list[Row]) -> None:
    """Gives claimed jobs back unsent (on shutdown) so that any process sends them at once.

    A job back to no attempts starts its retry budget over at its next claim.
    """
    if claimed:
        await conn.execute(
            update(dispatch_jobs)
            .where(
                tuple_(dispatch_jobs.c.id, dispatch_jobs.c.claimed_until).in_(
                    [(job["id"], job["claimed_until"]) for job in claimed]
                )
            )
            .values(
                claimed_until=None,
                attempts=dispatch_jobs.c.attempts - 1,
                first_attempt_at=case(
                    (dispatch_jobs.c.attempts > 1, dispatch_jobs.c.first_attempt_at)
                ),
            )
        )


def _ours(job: Row) -> dict[str, Any]:
    return {
        "job_id": job["id"],
        "job_claimed_until": job["claimed_until"],
        "match_id": job["match_id"],
    }
