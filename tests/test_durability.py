"""Durable hand-off with real server processes: killed with SIGKILL, restarted, or two at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal

import pytest
from sqlalchemy import func, select
from tornado.httpclient import HTTPClientError

from store.tables import matches
from tests.conftest import wait_until
from tests.queries import match_row, queue_is_empty, queued_jobs
from tests.test_uploads import MULTIPART, video_form


async def create_match(client, server, url: str = "https://videos.test/match.mp4") -> dict:
    response = await client.fetch(
        server.url + "/matches/youtube", method="POST", body=json.dumps({"url": url})
    )
    return json.loads(response.body)


# A job claimed by a process that then died is sent again when its lease runs out: short here.
SHORT_LEASE = pytest.mark.config(DISPATCH_TIMEOUT_SECONDS="0.5", DISPATCH_LEASE_SECONDS="1")


async def crash_while_creating(start_server, client, database, crash_at: str) -> dict:
    """Starts a server that dies with SIGKILL at `crash_at`, creates a match; returns its job."""
    doomed = await start_server(MATCHA_CRASH_AT=crash_at)
    with contextlib.suppress(HTTPClientError, OSError):  # it may die before it answers
        await create_match(client, doomed)
    assert await doomed.exited() == -signal.SIGKILL
    [job] = await queued_jobs(database)
    return job


async def assert_sent_once_after_restart(start_server, inference, database, job: dict) -> None:
    await start_server()
    [sent] = await inference.wait_for_jobs(1)
    match = await match_row(database, job["match_id"])
    assert (sent["match_id"], sent["analysis_id"]) == (match["id"], match["analysis_id"])
    await wait_until(lambda: queue_is_empty(database))
    inference.assert_each_once([match["id"]])


@SHORT_LEASE
@pytest.mark.gen_test(timeout=60)
async def test_job_committed_before_a_kill_is_sent_after_restart(
    start_server, client, inference, database
):
    """Guards against losing a match whose process died between its commit and its hand-off."""
    job = await crash_while_creating(start_server, client, database, "after-match-commit")
    assert inference.attempts == 0
    await assert_sent_once_after_restart(start_server, inference, database, job)


@SHORT_LEASE
@pytest.mark.gen_test(timeout=60)
async def test_job_claimed_by_a_killed_process_is_sent_after_its_lease(
    start_server, client, inference, database
):
    """Guards against a claim outliving the process that made it."""
    job = await crash_while_creating(start_server, client, database, "before-send")
    assert job["attempts"] == 1
    assert job["claimed_until"] is not None
    assert inference.attempts == 0
    await assert_sent_once_after_restart(start_server, inference, database, job)


@SHORT_LEASE
@pytest.mark.gen_test(timeout=60)
async def test_upload_killed_before_its_match_commits_leaves_nothing(
    start_server, client, inference, database, upload_dir
):
    """Guards against a video without a match: placed under its final name, then SIGKILL."""
    doomed = await start_server(MATCHA_CRASH_AT="after-upload-placed")
    with contextlib.suppress(HTTPClientError, OSError):
        await upload(client, doomed)
    assert await doomed.exited() == -signal.SIGKILL
    assert len(list(upload_dir.iterdir())) == 2  # the temp name and the final one

    await start_server()
    assert list(upload_dir.iterdir()) == []
    assert await database.fetch_value(select(func.count()).select_from(matches)) == 0
    assert inference.attempts == 0


@SHORT_LEASE
@pytest.mark.gen_test(timeout=60)
async def test_upload_killed_after_its_match_commits_keeps_its_video(
    start_server, client, inference, database, upload_dir
):
    """Guards against a match without its video: committed, then SIGKILL before the temp
    name went; the restart keeps the video and hands it over."""
    doomed = await start_server(MATCHA_CRASH_AT="after-match-commit")
    with contextlib.suppress(HTTPClientError, OSError):
        await upload(client, doomed)
    assert await doomed.exited() == -signal.SIGKILL
    [job] = await queued_jobs(database)

    await start_server()
    [sent] = await inference.wait_for_jobs(1)
    [stored] = list(upload_dir.iterdir())
    assert sent["video_url"] == str(stored.resolve())
    assert (await match_row(database, job["match_id"]))["stored_name"] == stored.name


async def upload(client, server) -> dict:
    response = await client.fetch(
        server.url + "/matches/upload", method="POST", body=video_form(), headers=MULTIPART
    )
    return json.loads(response.body)


@pytest.mark.gen_test(timeout=90)
async def test_two_servers_send_each_of_200_uploads_once(start_server, client, inference, database):
    """Guards against two processes sending the same job (or one forgetting a job)."""
    servers = await asyncio.gather(start_server(), start_server())
    matches = await asyncio.gather(*(upload(client, servers[number % 2]) for number in range(200)))
    await inference.wait_for_jobs(200, timeout=60)
    await wait_until(lambda: queue_is_empty(database), timeout=30)
    inference.assert_each_once([match["id"] for match in matches])
    assert inference.attempts == 200
