"""Hand-off to the inference engine: retries, giving up with a reason, runs sent once."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from services.dispatch import Dispatcher
from store import jobs
from store.tables import dispatch_jobs
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
    # Announced just after the FAILED status is committed.
    failed = (match["id"], "progress", {"matchId": match["id"], "progress": -1})
    await wait_until(lambda: failed in published)
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


@pytest.mark.gen_test
@pytest.mark.config(DISPATCH_MAX_SECONDS="20")
async def test_time_queued_before_the_first_attempt_does_not_count(
    services, config, create_match, inference, db
):
    """Guards DISPATCH_MAX_SECONDS running from the first attempt: a job queued 25 s while no
    process ran still gets its retries (it was FAILED after its first refusal)."""
    await services.dispatcher.stop()
    match = await create_match()
    await db.execute(
        update(dispatch_jobs).values(created_at=dispatch_jobs.c.created_at - timedelta(seconds=25))
    )
    inference.refuse_next(1)
    dispatcher = Dispatcher(db, services.live, config)
    await dispatcher.start()
    try:
        [job] = await inference.wait_for_jobs(1)
        assert job["match_id"] == match["id"]
        await wait_until(lambda: queue_is_empty(db))
    finally:
        await dispatcher.stop()
    assert inference.attempts == 2
    row = await match_row(db, match["id"])
    assert (row["status"], row["failure_reason"]) == ("PROCESSING", None)


@pytest.mark.gen_test
@pytest.mark.parametrize("status", [400, 404, 422])
async def test_engine_refusing_the_job_fails_the_match_at_once(
    create_match, inference, db, published, status
):
    """A 4xx is the engine refusing this job: sending it again cannot help."""
    inference.refuse_next(1, status=status)
    match = await create_match()
    row = await wait_until(lambda: _row_with_status(db, match["id"], "FAILED"))
    assert row["failure_reason"] == (
        f"inference engine at {inference.url}/api/v1/analyze: refused the job with HTTP {status}"
    )
    assert await queue_is_empty(db)
    assert inference.attempts == 1
    failed = (match["id"], "progress", {"matchId": match["id"], "progress": -1})
    await wait_until(lambda: failed in published)


@pytest.mark.gen_test
@pytest.mark.parametrize("status", [408, 425, 429])
async def test_engine_asking_to_try_later_is_retried(create_match, inference, db, status):
    inference.refuse_next(1, status=status)
    match = await create_match()
    [job] = await inference.wait_for_jobs(1)
    assert job["match_id"] == match["id"]
    assert inference.attempts == 2
    await wait_until(lambda: queue_is_empty(db))
    assert (await match_row(db, match["id"]))["status"] == "PROCESSING"


FRAMES = [{"t": 1.0, "b": [], "p": [[0.1, 0.1, 0.1, 0.1, 4, 0]]}]
# A report on the run for each callback, and the status it leaves the match in.
REPORTS = [
    ("progress", {"progress": 10}, "PROCESSING"),
    ("progress", {"progress": -1}, "FAILED"),
    ("live-event", {"timestamp": 1, "type": "GOAL", "confidence": 0.9}, "UPLOADED"),
    ("tracking-update", {"frames": FRAMES}, "UPLOADED"),
    ("complete", {"events": []}, "COMPLETED"),
]


@pytest.mark.gen_test
@pytest.mark.parametrize(("path", "body", "status"), REPORTS)
@pytest.mark.config(DISPATCH_TIMEOUT_SECONDS="0.2", DISPATCH_BACKOFF_SECONDS="60")
async def test_a_report_on_the_run_ends_a_hand_off_that_timed_out(
    api, create_match, inference, db, path, body, status
):
    """The engine answered too late but took the job: once it reports on the run, the job
    is not sent again (it was, with the same analysis_id, even after COMPLETED)."""
    inference.hold()
    match = await create_match()
    await wait_until(lambda: _attempted(db, match["id"], 1, claimed=False))

    response = await api.post(
        f"/matches/{match['id']}/{path}", {**body, "analysis_id": match["analysis_id"]}
    )
    assert response.code == 201
    assert await queue_is_empty(db)
    assert (await match_row(db, match["id"]))["status"] == status


@pytest.mark.gen_test
async def test_a_report_before_the_job_was_ever_sent_leaves_it_queued(
    services, create_match, api, db
):
    """Such a report cannot come from this hand-off: it may be the run before a reanalyze,
    reported by an engine that names no run."""
    await services.dispatcher.stop()
    match = await create_match()
    assert (await api.post(f"/matches/{match['id']}/progress", {"progress": 10})).code == 201
    [job] = await queued_jobs(db, match["id"])
    assert (job["attempts"], str(job["analysis_id"])) == (0, match["analysis_id"])


@pytest.mark.gen_test
@pytest.mark.parametrize("answer", [500, 422])
@pytest.mark.config(DISPATCH_MAX_ATTEMPTS="1")
async def test_a_send_under_way_when_the_engine_reports_does_not_fail_the_match(
    api, create_match, inference, db, published, monkeypatch, answer
):
    """The engine reports on the run while the hand-off's answer is still on its way; the
    attempt then fails, which would otherwise give up on the match."""
    gave_up = []
    finish_failed = jobs.finish_failed

    async def recorded(conn, job, reason):
        gave_up.append(await finish_failed(conn, job, reason))
        return gave_up[-1]

    monkeypatch.setattr(jobs, "finish_failed", recorded)
    inference.hold()
    match = await create_match()
    await inference.wait_for_attempts(1)
    assert (await api.post(f"/matches/{match['id']}/progress", {"progress": 10})).code == 201

    inference.refuse_next(1, status=answer)
    inference.let_go()
    await wait_until(lambda: gave_up)
    assert gave_up == [False]
    row = await match_row(db, match["id"])
    assert (row["status"], row["progress"], row["failure_reason"]) == ("PROCESSING", 10, None)
    assert all(update[2].get("progress") != -1 for update in published)


@pytest.mark.gen_test
@pytest.mark.config(DISPATCH_BACKOFF_SECONDS="60")
async def test_a_report_naming_no_run_leaves_a_hand_off_the_engine_refused(
    api, create_match, inference, db
):
    """Guards a reanalysis against the run before it: today's engine names no run, so its
    late reports look like reports on the new one. The new job, refused by the engine
    (here 503) and waiting to be retried, must stay queued, not be taken as handed over."""
    match = await create_match()
    await inference.wait_for_jobs(1)
    inference.refuse_next(1, status=503)
    assert (await api.post(f"/matches/{match['id']}/reanalyze")).code == 200
    await inference.wait_for_attempts(2)
    await wait_until(lambda: _waiting_for_retry(db, match["id"]))

    assert (await api.post(f"/matches/{match['id']}/progress", {"progress": 40})).code == 201
    [job] = await queued_jobs(db, match["id"])
    assert job["attempts"] == 1


async def _waiting_for_retry(db, match_id: str) -> bool:
    jobs_of_match = await queued_jobs(db, match_id)
    return bool(jobs_of_match) and jobs_of_match[0]["claimed_until"] is None
