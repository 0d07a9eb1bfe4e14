"""Hand-off to the inference engine: retries, giving up with a reason, runs sent once."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select, text

from tests.conftest import wait_until
from tests.queries import match_row, queue_is_empty, queued_jobs


@pytest.mark.gen_test
async def test_job_names_the_current_run(create_match, inference, db):
    """The engine gets the run id that its callbacks must name."""
    match = await create_match("https://videos.example/a.mp4")
    [job] = await inference.wait_for_jobs(1)
    assert job == {
        "match_id": match["id"],
        "analysis_id": match["analysis_id"],
        "video_url": "https://videos.example/a.mp4",
    }
    await wait_until(lambda: queue_is_empty(db))
    assert (await match_row(db, match["id"]))["status"] == "PROCESSING"


@pytest.mark.gen_test
@pytest.mark.config(DISPATCH_POLL_SECONDS="3600")
async def test_a_new_job_wakes_the_dispatcher_without_the_poll(create_match, inference, db):
    """Guards LISTEN/NOTIFY: with the fallback poll an hour away, the job still goes at once."""
    await wait_until(lambda: _listening(db))
    match = await create_match()
    [job] = await inference.wait_for_jobs(1)
    assert job["match_id"] == match["id"]


async def _listening(db) -> bool:
    """The dispatcher's notification connection has run its LISTEN."""
    query = select(func.count()).where(
        text("query LIKE 'LISTEN %' AND datname = current_database()")
    )
    return bool(await db.fetch_value(query.select_from(text("pg_stat_activity"))))


@pytest.mark.gen_test
async def test_refused_hand_off_is_retried(create_match, inference, db):
    inference.refuse_next(2, status=503)
    match = await create_match()
    [job] = await inference.wait_for_jobs(1)
    assert job["match_id"] == match["id"]
    assert inference.attempts == 3
    await wait_until(lambda: queue_is_empty(db))


@pytest.mark.gen_test
@pytest.mark.config(DISPATCH_MAX_ATTEMPTS="3")
async def test_engine_down_past_the_retry_limit_fails_the_match(
    create_match, inference, db, published, api
):
    """Guards against a match waiting forever, or failing without saying why."""
    await inference.stop()
    match = await create_match()

    row = await wait_until(
        lambda: _row_with_status(db, match["id"], "FAILED"), timeout=10, interval=0.02
    )
    assert re.fullmatch(
        rf"inference engine unreachable at {re.escape(inference.url)}/api/v1/analyze: "
        r"connection refused, 3 attempts over \d+(\.\d)? s",
        row["failure_reason"],
    ), row["failure_reason"]
    assert await queue_is_empty(db)
    assert (match["id"], "progress", {"matchId": match["id"], "progress": -1}) in published
    detail = (await api.get(f"/matches/{match['id']}")).json
    assert detail["status"] == "FAILED"
    assert detail["failureReason"] == row["failure_reason"]


@pytest.mark.gen_test
@pytest.mark.config(DISPATCH_MAX_ATTEMPTS="1000", DISPATCH_MAX_SECONDS="0.5")
async def test_engine_down_past_the_retry_time_fails_the_match(create_match, inference, db):
    """Guards DISPATCH_MAX_SECONDS: the time limit ends the retries long before the count."""
    await inference.stop()
    match = await create_match()
    row = await wait_until(lambda: _row_with_status(db, match["id"], "FAILED"), timeout=10)
    attempts = re.search(r", (\d+) attempts? over (\S+) s$", row["failure_reason"])
    assert 1 <= int(attempts[1]) < 1000
    assert float(attempts[2]) <= 0.5


@pytest.mark.gen_test
@pytest.mark.config(DISPATCH_MAX_ATTEMPTS="3")
async def test_engine_answering_errors_past_the_limit_says_so(create_match, inference, db):
    inference.refuse_next(3, status=500)
    match = await create_match()
    row = await wait_until(lambda: _row_with_status(db, match["id"], "FAILED"))
    assert row["failure_reason"] == (
        f"inference engine at {inference.url}/api/v1/analyze answered HTTP 500, "
        f"3 attempts over {row['failure_reason'].rsplit(' over ', 1)[1]}"
    )


@pytest.mark.gen_test
@pytest.mark.config(DISPATCH_MAX_ATTEMPTS="10")
async def test_engine_coming_up_during_retries_gets_the_job(create_match, inference, db):
    await inference.stop()
    match = await create_match()
    await wait_until(lambda: _attempted(db, match["id"], 2))

    await inference.start()
    [job] = await inference.wait_for_jobs(1)
    assert job["match_id"] == match["id"]
    await wait_until(lambda: queue_is_empty(db))
    row = await match_row(db, match["id"])
    assert row["status"] == "PROCESSING"
    assert row["failure_reason"] is None


@pytest.mark.gen_test
@pytest.mark.config(DISPATCH_BACKOFF_SECONDS="0.5")
async def test_reanalyze_while_queued_sends_once(create_match, inference, db, api):
    """The queued job of the first run is replaced, not sent alongside the new one."""
    inference.refuse_next(1)
    match = await create_match()
    await wait_until(lambda: _attempted(db, match["id"], 1, claimed=False))

    assert (await api.post(f"/matches/{match['id']}/reanalyze")).code == 200
    new_run = str((await match_row(db, match["id"]))["analysis_id"])
    assert new_run != match["analysis_id"]
    await wait_until(lambda: queue_is_empty(db))
    inference.assert_each_once([match["id"]])
    assert inference.jobs[0]["analysis_id"] == new_run
    assert inference.attempts == 2


async def _row_with_status(db, match_id: str, status: str):
    row = await match_row(db, match_id)
    return row if row["status"] == status else None


async def _attempted(db, match_id: str, attempts: int, claimed: bool | None = None) -> bool:
    """The match's job was tried at least `attempts` times (and is, or is not, being sent)."""
    jobs = await queued_jobs(db, match_id)
    return (
        bool(jobs)
        and jobs[0]["attempts"] >= attempts
        and (claimed is None or (jobs[0]["claimed_until"] is not None) == claimed)
    )


@pytest.mark.gen_test
@pytest.mark.config(DISPATCH_MAX_ATTEMPTS="1", DISPATCH_TIMEOUT_SECONDS="0.2")
async def test_engine_that_never_answers_fails_the_match_saying_so(create_match, inference, db):
    inference.hold()
    match = await create_match()
    row = await wait_until(lambda: _row_with_status(db, match["id"], "FAILED"))
    assert row["failure_reason"].startswith(
        f"inference engine unreachable at {inference.url}/api/v1/analyze: "
        "no answer within 0.2 s, 1 attempt over "
    )
