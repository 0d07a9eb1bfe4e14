"""Analysis runs: a slow old run never overwrites a reanalysis; COMPLETED stays COMPLETED."""

from __future__ import annotations

import pytest

from store import matches as store_matches
from tests.conftest import assert_error, wait_until
from tests.queries import match_row, queue_is_empty, queued_jobs

COMPLETE = {"events": [{"timestamp": 12.5, "type": "GOAL", "confidence": 0.9}], "summary": "1-0"}


async def events_of(db, match_id: str) -> list[str]:
    async with db.connection() as conn:
        results = await store_matches.get_results(conn, match_id)
    return [event["type"] for event in results["events"]]


async def reanalyzed(api, inference, match: dict) -> str:
    """Reanalyzes the match once its first run was handed over; returns the new run's id."""
    await inference.wait_for_jobs(1)
    assert (await api.post(f"/matches/{match['id']}/reanalyze")).code == 200
    [_, new_job] = await inference.wait_for_jobs(2)
    assert new_job["analysis_id"] != match["analysis_id"]
    return new_job["analysis_id"]


@pytest.mark.gen_test
async def test_old_runs_complete_is_refused_after_reanalyze(api, create_match, inference, db):
    """Guards against a slow old run overwriting the results of the reanalysis."""
    match = await create_match()
    old_run = match["analysis_id"]
    path = f"/matches/{match['id']}"
    assert (
        await api.post(f"{path}/progress", {"progress": 30, "analysis_id": old_run})
    ).code == 201
    new_run = await reanalyzed(api, inference, match)

    response = await api.post(f"{path}/complete", {**COMPLETE, "analysis_id": old_run})
    assert_error(response, 409, f"analysis_id: {old_run} is not the current analysis")
    row = await match_row(db, match["id"])
    assert (row["status"], row["progress"], row["summary"]) == ("PROCESSING", 0, None)
    assert await events_of(db, match["id"]) == []

    response = await api.post(
        f"{path}/complete", {**COMPLETE, "summary": "2-1"}, headers={"X-Analysis-Id": new_run}
    )
    assert response.code == 201
    row = await match_row(db, match["id"])
    assert (row["status"], row["progress"], row["summary"]) == ("COMPLETED", 100, "2-1")
    assert await events_of(db, match["id"]) == ["GOAL"]


@pytest.mark.gen_test
async def test_old_runs_progress_is_refused_after_reanalyze(api, create_match, inference, db):
    match = await create_match()
    await reanalyzed(api, inference, match)
    response = await api.post(
        f"/matches/{match['id']}/progress",
        {"progress": 80},
        headers={"X-Analysis-Id": match["analysis_id"]},
    )
    assert_error(response, 409, match["analysis_id"])
    assert (await match_row(db, match["id"]))["progress"] == 0


@pytest.mark.gen_test
async def test_late_progress_or_failure_after_complete_changes_nothing(api, create_match, db):
    """A COMPLETED match never falls back to PROCESSING, nor to FAILED."""
    match = await create_match()
    assert (await api.post(f"/matches/{match['id']}/complete", COMPLETE)).code == 201
    before = await match_row(db, match["id"])

    for late in ({"progress": 60, "stage": "late"}, {"progress": -1}):
        response = await api.post(f"/matches/{match['id']}/progress", late)
        assert (response.code, response.json) == (201, {"ok": True, "ignored": True})
    assert await match_row(db, match["id"]) == before


@pytest.mark.gen_test
async def test_late_progress_after_the_engine_failed_the_run_changes_nothing(api, create_match, db):
    """A run the engine reported failed stays FAILED: a straggling progress does not bring
    it back to PROCESSING, where nothing would ever end it."""
    match = await create_match()
    assert (await api.post(f"/matches/{match['id']}/progress", {"progress": -1})).code == 201
    before = await match_row(db, match["id"])
    response = await api.post(f"/matches/{match['id']}/progress", {"progress": 40})
    assert (response.code, response.json) == (201, {"ok": True, "ignored": True})
    assert await match_row(db, match["id"]) == before
    assert before["status"] == "FAILED"


@pytest.mark.gen_test
async def test_old_runs_reports_leave_the_new_runs_hand_off_queued(
    api, create_match, inference, db
):
    """Only a report on the current run shows that the engine has its job."""
    match = await create_match()
    await inference.wait_for_jobs(1)
    inference.hold()
    assert (await api.post(f"/matches/{match['id']}/reanalyze")).code == 200
    await inference.wait_for_attempts(2)

    old_run = {"X-Analysis-Id": match["analysis_id"]}
    for path, body in (
        ("progress", {"progress": 50}),
        ("live-event", {"timestamp": 1, "type": "GOAL"}),
        ("tracking-update", {"frames": []}),
        ("complete", COMPLETE),
    ):
        response = await api.post(f"/matches/{match['id']}/{path}", body, headers=old_run)
        assert_error(response, 409, match["analysis_id"])
    [job] = await queued_jobs(db, match["id"])
    assert str(job["analysis_id"]) != match["analysis_id"]

    inference.let_go()
    [_, new_job] = await inference.wait_for_jobs(2)
    assert new_job["analysis_id"] == str(job["analysis_id"])
    await wait_until(lambda: queue_is_empty(db))
