"""Analysis runs: callbacks of an old run never overwrite a new one; progress only moves on."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from store import matches as store_matches
from tests.queries import match_row

COMPLETE = {"events": [{"timestamp": 12.5, "type": "GOAL", "confidence": 0.9}], "summary": "1-0"}


@pytest.fixture
def callback(http_client, base_url):
    """Posts a callback as the engine does; returns (status, answer)."""

    async def post(match_id: str, name: str, body: dict, headers: dict | None = None):
        try:
            response = await http_client.fetch(
                f"{base_url}/matches/{match_id}/{name}",
                method="POST",
                body=json.dumps(body),
                headers=headers,
            )
        except HTTPClientError as error:
            response = error.response
        return response.code, json.loads(response.body or b"null")

    return post


async def results(db, match_id: str) -> dict:
    async with db.connection() as conn:
        return await store_matches.get_results(conn, match_id)


@pytest.mark.gen_test
async def test_old_runs_complete_is_refused_after_reanalyze(
    create_match, callback, inference, db, http_client, base_url
):
    """Guards against a slow old run overwriting the results of the reanalysis."""
    match = await create_match()
    old_run = match["analysisId"]
    await inference.wait_for_jobs(1)
    assert (await callback(match["id"], "progress", {"progress": 30, "analysis_id": old_run}))[
        0
    ] == 201

    await http_client.fetch(f"{base_url}/matches/{match['id']}/reanalyze", method="POST", body="")
    [_, new_job] = await inference.wait_for_jobs(2)
    new_run = new_job["analysis_id"]
    assert new_run != old_run

    status, error = await callback(match["id"], "complete", {**COMPLETE, "analysis_id": old_run})
    assert status == 409
    assert error["message"] == f"analysis_id: {old_run} is not the current analysis of this match"
    row = await match_row(db, match["id"])
    assert (row["status"], row["progress"], row["summary"]) == ("PROCESSING", 0, None)
    assert (await results(db, match["id"]))["events"] == []

    status, _ = await callback(
        match["id"], "complete", {**COMPLETE, "summary": "2-1"}, {"X-Analysis-Id": new_run}
    )
    assert status == 201
    row = await match_row(db, match["id"])
    assert (row["status"], row["progress"], row["summary"]) == ("COMPLETED", 100, "2-1")
    assert [event["type"] for event in (await results(db, match["id"]))["events"]] == ["GOAL"]


@pytest.mark.gen_test
async def test_old_runs_progress_is_refused(
    create_match, callback, inference, db, http_client, base_url
):
    match = await create_match()
    await http_client.fetch(f"{base_url}/matches/{match['id']}/reanalyze", method="POST", body="")
    status, _ = await callback(
        match["id"], "progress", {"progress": 80}, {"X-Analysis-Id": match["analysisId"]}
    )
    assert status == 409
    assert (await match_row(db, match["id"]))["progress"] == 0


@pytest.mark.gen_test
async def test_callback_naming_no_run_applies_to_the_current_one(create_match, callback, db):
    """Today's engine sends no analysis_id: its callbacks must still be applied."""
    match = await create_match()
    assert (await callback(match["id"], "progress", {"progress": 45}))[0] == 201
    assert (await callback(match["id"], "complete", COMPLETE))[0] == 201
    row = await match_row(db, match["id"])
    assert (row["status"], row["progress"]) == ("COMPLETED", 100)


@pytest.mark.gen_test
async def test_late_progress_after_complete_changes_nothing(create_match, callback, db):
    match = await create_match()
    assert (await callback(match["id"], "complete", COMPLETE))[0] == 201
    before = await match_row(db, match["id"])

    status, answer = await callback(match["id"], "progress", {"progress": 60, "stage": "late"})
    assert (status, answer) == (201, {"ok": True, "ignored": True})
    status, answer = await callback(match["id"], "progress", {"progress": -1})
    assert (status, answer) == (201, {"ok": True, "ignored": True})
    assert await match_row(db, match["id"]) == before


@pytest.mark.gen_test
async def test_progress_never_goes_backwards(create_match, callback, db):
    match = await create_match()
    await callback(match["id"], "progress", {"progress": 70, "stage": "tracking"})
    status, answer = await callback(match["id"], "progress", {"progress": 40, "stage": "audio"})
    assert (status, answer) == (201, {"ok": True, "ignored": False})
    row = await match_row(db, match["id"])
    assert (row["status"], row["progress"]) == ("PROCESSING", 70)
