"""The dispatch queue's timing, as the dispatcher's claim loop reads it."""

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from store import jobs
from store import matches as store_matches
from store.db import Database
from store.tables import dispatch_jobs
from tests.queries import match_row, queue_is_empty
from tests.waiting import wait_until


@pytest.mark.gen_test
async def test_an_empty_queue_has_nothing_to_wait_for(db):
    """None, not 0: with 0 the idle dispatcher queried the database again at once, forever."""
    async with db.connection() as conn:
        assert await jobs.seconds_until_next_due(conn) is None


async def _queued_match(conn) -> dict:
    match = await store_matches.insert_match(conn, upload_url="https://videos.example/a.mp4")
    match["analysis_id"] = await jobs.start_run(conn, match["id"], {"video_url": "a.mp4"})
    return match


async def _backdate(conn, column: str, seconds: float) -> None:
    column = dispatch_jobs.c[column]
    await conn.execute(update(dispatch_jobs).values({column: column - timedelta(seconds=seconds)}))


@pytest.mark.gen_test
async def test_a_claim_says_how_long_since_the_first_attempt(database):
    """The retry budget's clock: from the first claim (not the job's creation), by PostgreSQL's
    clock; a job given back before any attempt counted starts over."""
    async with database.connection() as conn:
        await _queued_match(conn)
        await _backdate(conn, "created_at", 600)  # queued while no process ran

        [first] = await jobs.claim_due(conn, 10, lease_seconds=60)
        assert first["attempts"] == 1
        assert 0 <= first["elapsed"] < 5
        await _backdate(conn, "first_attempt_at", 30)
        await jobs.release(conn, [first])  # shutdown: the attempt does not count
        [again] = await jobs.claim_due(conn, 10, lease_seconds=60)
        assert again["attempts"] == 1
        assert 0 <= again["elapsed"] < 5

        await jobs.retry_later(conn, again, 0, "HTTP 503", unanswered=False)
        await _backdate(conn, "first_attempt_at", 30)
        [second] = await jobs.claim_due(conn, 10, lease_seconds=60)
        assert second["attempts"] == 2
        assert 30 <= second["elapsed"] < 35
        await jobs.release(conn, [second])  # the first attempt still counts
        [third] = await jobs.claim_due(conn, 10, lease_seconds=60)
        assert third["attempts"] == 2
        assert 30 <= third["elapsed"] < 35


@pytest.mark.gen_test
async def test_finishing_a_job_waits_for_a_callback_that_holds_its_match(database_url):
    """Guards the lock order, match before job, of every statement writing both: `complete`
    (match locked, then the job ended) and the sender finishing that job deadlocked."""
    db = await Database.connect(database_url, size=3)
    try:
        async with db.connection() as conn:
            match = await _queued_match(conn)
            [job] = await jobs.claim_due(conn, 10, lease_seconds=60)
        async with db.transaction() as callback:
            await store_matches.get_run_state(callback, match["id"], lock=True)
            finishing = asyncio.ensure_future(_finish_accepted(db, job))
            await wait_until(lambda: _waiting_on_a_lock(db))
            await jobs.end_dispatch(callback, match["id"], match["analysis_id"], named_run=True)
        await finishing
        assert await queue_is_empty(db)
        assert (await match_row(db, match["id"]))["status"] == "UPLOADED"
    finally:
        await db.close()


async def _finish_accepted(db: Database, job: dict) -> None:
    async with db.connection() as conn:
        await jobs.finish_accepted(conn, job)


async def _waiting_on_a_lock(db: Database) -> bool:
    query = select(func.count()).where(
        text("wait_event_type = 'Lock' AND datname = current_database()")
    )
    return bool(await db.fetch_value(query.select_from(text("pg_stat_activity"))))
