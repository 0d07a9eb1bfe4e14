"""The matches API: list, detail, stats, reanalyze, delete, URL intake, CORS and errors."""

import asyncio
import uuid

import psycopg2.extensions
import pytest

from tests.conftest import assert_error, drop_database
from tests.test_callbacks import complete_body
from tests.test_uploads import in_thread, parse_answer, raw_exchange

PREFIXES = ["", "/api/v1"]


@pytest.mark.gen_test
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_list_is_newest_first_with_counts_and_without_tracking(api, create_match, prefix):
    first = await create_match("https://videos.example/1.mp4")
    second = await create_match("https://videos.example/2.mp4")
    await api.post(f"/matches/{first['id']}/complete", complete_body())
    listed = (await api.get(f"{prefix}/matches")).json
    assert [item["id"] for item in listed] == [second["id"], first["id"]]
    assert listed[1]["_count"] == {"events": 3, "highlights": 2}
    assert listed[0]["_count"] == {"events": 0, "highlights": 0}
    assert "trackingData" not in listed[1]
    assert {
        "id",
        "uploadUrl",
        "status",
        "progress",
        "duration",
        "summary",
        "highlightReelUrl",
        "teamColors",
        "heatmapUrl",
        "thumbnailUrl",
        "topSpeedKmh",
        "userId",
        "createdAt",
        "updatedAt",
    } <= set(listed[1])


@pytest.mark.gen_test
async def test_list_pages_with_limit_and_before(api, create_match):
    ids = [(await create_match(f"https://videos.example/{n}.mp4"))["id"] for n in range(5)]
    newest_first = ids[::-1]
    page = (await api.get("/matches?limit=2")).json
    assert [item["id"] for item in page] == newest_first[:2]
    page = (await api.get(f"/matches?limit=2&before={page[-1]['id']}")).json
    assert [item["id"] for item in page] == newest_first[2:4]
    page = (await api.get(f"/matches?before={page[-1]['id']}")).json
    assert [item["id"] for item in page] == newest_first[4:]


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=%C2%B2", "limit"),
        ("limit=%D9%A3", "limit"),
        ("limit=5000", "limit"),
        (f"before={uuid.uuid4()}", "before: no match"),
        ("before=yesterday", "before: expected a match id"),
    ],
)
async def test_list_refuses_bad_paging(api, query, message):
    assert_error(await api.get(f"/matches?{query}"), 400, message)


@pytest.mark.gen_test
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_detail_of_unknown_or_malformed_id_is_404(api, prefix):
    assert_error(await api.get(f"{prefix}/matches/{uuid.uuid4()}"), 404, "Match not found")
    assert_error(await api.get(f"{prefix}/matches/not-a-uuid"), 404)


@pytest.mark.gen_test
async def test_stats_add_up(api, create_match):
    first = await create_match()
    await create_match()
    await api.post(f"/matches/{first['id']}/complete", complete_body(duration=90.5))
    stats = (await api.get("/matches/stats")).json
    assert stats == {
        "totalMatches": 2,
        "totalEvents": 3,
        "totalHighlights": 2,
        "totalDuration": 90.5,
    }


@pytest.mark.gen_test
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_reanalyze_clears_results_and_hands_over_again(api, create_match, inference, prefix):
    match = await create_match()
    await inference.wait_for_jobs(1)
    await api.post(f"/matches/{match['id']}/complete", complete_body())
    response = await api.post(f"{prefix}/matches/{match['id']}/reanalyze")
    assert (response.code, response.json) == (200, {"ok": True})
    detail = (await api.get(f"/matches/{match['id']}")).json
    assert (detail["status"], detail["progress"]) == ("PROCESSING", 0)
    assert (detail["events"], detail["highlights"], detail["emotionScores"]) == ([], [], [])
    assert (detail["summary"], detail["trackingData"], detail["duration"]) == (None, None, None)
    jobs = await inference.wait_for_jobs(2)
    assert [job["match_id"] for job in jobs] == [match["id"], match["id"]]
    assert jobs[1]["video_url"] == jobs[0]["video_url"]
    assert jobs[1]["analysis_id"] != jobs[0]["analysis_id"]
    assert jobs[1]["analysis_id"] == detail["analysisId"]


@pytest.mark.gen_test
async def test_reanalyze_of_url_intake_hands_over_the_remote_video_again(api, inference):
    """Guards the source of a URL intake: `complete`'s `videoUrl` (the engine's local copy)
    changes what the frontend plays, not what a reanalysis sends with its clip window."""
    body = {"url": "https://videos.example/final.mp4", "start_time": 30, "end_time": 90}
    match = (await api.post("/matches/youtube", body)).json
    await inference.wait_for_jobs(1)
    await api.post(f"/matches/{match['id']}/complete", complete_body(videoUrl="/uploads/c.mp4"))
    assert (await api.get(f"/matches/{match['id']}")).json["uploadUrl"] == "/uploads/c.mp4"

    await api.post(f"/matches/{match['id']}/reanalyze")
    jobs = await inference.wait_for_jobs(2)
    assert [(job["video_url"], job["start_time"], job["end_time"]) for job in jobs] == [
        ("https://videos.example/final.mp4", 30, 90)
    ] * 2


@pytest.mark.gen_test
async def test_reanalyze_unknown_match_is_404(api):
    assert_error(await api.post(f"/matches/{uuid.uuid4()}/reanalyze"), 404)


@pytest.mark.gen_test
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_delete_removes_match_results_and_its_files(
    api, services, upload_dir, inference, prefix
):
    (upload_dir / "video.mp4").write_bytes(b"video")
    (upload_dir / "reel.mp4").write_bytes(b"reel")
    (upload_dir / "keep.mp4").write_bytes(b"another match's file")
    outside = upload_dir.parent / "outside.mp4"
    outside.write_bytes(b"not ours")
    match = await services.matches.create_from_upload("video.mp4", "final.mp4", None)
    await api.post(
        f"/matches/{match['id']}/complete",
        complete_body(highlightReelUrl="/uploads/reel.mp4", thumbnailUrl="/uploads/../outside.mp4"),
    )
    response = await api.request("DELETE", f"{prefix}/matches/{match['id']}")
    assert (response.code, response.json) == (200, {"ok": True})
    assert_error(await api.get(f"/matches/{match['id']}"), 404)
    assert sorted(path.name for path in upload_dir.iterdir()) == ["keep.mp4"]
    assert outside.exists()
    assert_error(await api.request("DELETE", f"/matches/{match['id']}"), 404)


@pytest.mark.gen_test
async def test_delete_keeps_files_another_match_still_refers_to(api, services, upload_dir):
    """Guards against a callback naming another match's video as an output: deleting the
    match that named it must not take the other match's video with it."""
    (upload_dir / "a.mp4").write_bytes(b"match A's video")
    (upload_dir / "b.mp4").write_bytes(b"match B's video")
    (upload_dir / "shared.png").write_bytes(b"named by both")
    (upload_dir / "link.png").symlink_to(upload_dir / "a.mp4")
    a = await services.matches.create_from_upload("a.mp4", None, None)
    b = await services.matches.create_from_upload("b.mp4", None, None)
    await api.post(
        f"/matches/{a['id']}/complete", {"events": [], "heatmapUrl": "/uploads/shared.png"}
    )
    await api.post(
        f"/matches/{b['id']}/complete",
        {
            "events": [],
            "thumbnailUrl": "/uploads/./a.mp4",
            "heatmapUrl": "/uploads/shared.png",
            "highlightReelUrl": "/uploads/link.png",
            "highlights": [{"startTime": 1, "endTime": 2, "videoUrl": "/uploads/a%2Emp4"}],
        },
    )
    assert (await api.request("DELETE", f"/matches/{b['id']}")).code == 200
    assert sorted(path.name for path in upload_dir.iterdir()) == ["a.mp4", "shared.png"]
    assert (upload_dir / "a.mp4").read_bytes() == b"match A's video"
    assert (await api.request("DELETE", f"/matches/{a['id']}")).code == 200
    assert list(upload_dir.iterdir()) == []


@pytest.mark.gen_test
async def test_deleting_a_url_intake_leaves_local_files_its_remote_url_resembles(
    api, services, upload_dir
):
    """Guards against taking a remote URL's path for a file of ours."""
    (upload_dir / "foo.mp4").write_bytes(b"someone else's video")
    match = await services.matches.create_from_url(
        "https://cdn.test/uploads/foo.mp4", None, None, None
    )
    assert (await api.request("DELETE", f"/matches/{match['id']}")).code == 200
    assert (upload_dir / "foo.mp4").exists()


@pytest.mark.gen_test
async def test_a_preflight_on_a_json_body_route_keeps_its_connection(http_server, http_port):
    """Guards against treating a preflight as a body refused half-way (closed, lingering)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write(
        b"OPTIONS /matches/youtube HTTP/1.1\r\nHost: localhost\r\n"
        b"Origin: http://localhost:3000\r\nAccess-Control-Request-Method: POST\r\n\r\n"
    )
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    writer.close()
    assert head.startswith("HTTP/1.1 204")
    assert "Connection: close" not in head


@pytest.mark.gen_test
async def test_url_intake_creates_match_and_dispatches_clip_window(api, inference):
    response = await api.post(
        "/matches/youtube",
        {"url": "https://www.youtube.com/watch?v=abc", "start_time": 30, "end_time": 90},
    )
    assert response.code == 201
    match = response.json
    assert (match["uploadUrl"], match["status"]) == (
        "https://www.youtube.com/watch?v=abc",
        "UPLOADED",
    )
    (job,) = await inference.wait_for_jobs(1)
    assert job == {
        "match_id": match["id"],
        "analysis_id": match["analysisId"],
        "video_url": "https://www.youtube.com/watch?v=abc",
        "start_time": 30,
        "end_time": 90,
    }


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "url: required"),
        ({"url": 5}, "url: expected string"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "https://x", "start_time": "a"}, "start_time"),
        ({"url": "https://x", "title": "a\0b"}, "title: must not contain NUL"),
        ({"url": "https://x", "start_time": 10, "end_time": 5}, "end_time: must be after"),
        ({"url": "https://x", "start_time": -1}, "start_time: expected a number >= 0"),
        ({"url": "https://x", "title": "t" * 201}, "title: expected at most 200 characters"),
    ],
)
async def test_url_intake_refuses_bad_bodies(api, body, message):
    assert_error(await api.post("/matches/youtube", body), 400, message)
    assert (await api.get("/matches")).json == []


@pytest.mark.gen_test
async def test_a_refusal_does_not_repeat_a_huge_value(api):
    """Guards against echoing a multi-MB field back (and into the log) in the message."""
    response = await api.post("/matches/youtube", {"url": "https://x/" + "a" * 600_000})
    assert_error(response, 400, "url: expected at most 2048 characters")
    assert len(response.body) < 500


@pytest.mark.gen_test
async def test_cors_preflight_and_headers(api):
    response = await api.request(
        "OPTIONS",
        "/api/v1/matches",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert response.code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "Range" in response.headers["Access-Control-Allow-Headers"]
    response = await api.get("/matches", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await api.get("/matches", headers={"Origin": "http://127.0.0.1:5173"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
    assert "Content-Range" in response.headers["Access-Control-Expose-Headers"]


@pytest.mark.gen_test
async def test_unknown_route_is_a_json_404(api):
    assert_error(await api.get("/nothing/here"), 404, "/nothing/here")


@pytest.mark.gen_test
async def test_health_reports_database_up_then_down(api, pg_server, database_url):
    response = await api.get("/health")
    assert (response.code, response.json["database"]) == (200, "up")
    head = await api.request("HEAD", "/health")
    assert (head.code, head.body) == (200, b"")
    drop_database(pg_server, psycopg2.extensions.parse_dsn(database_url)["dbname"])
    response = await api.get("/health")
    assert (response.code, response.json["database"]) == (503, "down")


@pytest.mark.gen_test
async def test_url_intake_refuses_a_body_over_its_cap_with_a_json_413(http_server, http_port):
    """Guards the contract's JSON errors: Tornado's own cap answered a bare 400."""
    head = (
        b"POST /matches/youtube HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 999999999999\r\n\r\n"
    )
    status, _, error = parse_answer(await in_thread(raw_exchange, http_port, head, b"{}"))
    assert (status, error["statusCode"]) == (413, 413)
    assert error["message"].startswith("body: larger than")
