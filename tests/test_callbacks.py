"""The inference engine's callbacks: what they store, what they refuse, what they announce."""

import asyncio
import json
import re
import socket
import uuid

import pytest

from tests.conftest import assert_error
from tests.test_uploads import lingering  # noqa: F401 (each refused connection is let go)

PREFIXES = ["", "/api/v1"]


def complete_body(**extra):
    return {
        "events": [
            {
                "timestamp": 12.5,
                "type": "GOAL",
                "confidence": 1.7,
                "finalScore": 11,
                "commentary": "c" * 1500,
                "extraKey": "ignored",
            },
            {"timestamp": 3.0, "type": "Celebrate", "confidence": -0.2},
            {"timestamp": 7.0, "type": "dribble", "confidence": 0.5, "finalScore": 4.2},
        ],
        "highlights": [
            {
                "startTime": 10,
                "endTime": 20,
                "score": 42,
                "eventType": "G" * 80,
                "commentary": "h" * 900,
                "videoUrl": "/uploads/reel-1.mp4",
            },
            {"startTime": 1, "endTime": 4},
        ],
        "emotionScores": [
            {
                "timestamp": 2,
                "audioScore": 3,
                "motionScore": -1,
                "contextWeight": 0.5,
                "finalScore": 12,
            },
        ],
        "duration": -4,
        "summary": "s" * 6000,
        "teamColors": [[255, 0, 0], [0, 0, 255]],
        "trackingData": [{"t": 0.0, "b": [[0.1, 0.2, 0.05, 0.05, 0.9]], "p": []}],
        "topSpeedKmh": 31.5,
        **extra,
    }


NO_RESULTS = (0, None, None, [], [], [])


def results_of(response):
    """What a callback may write (the dispatcher may still move status to PROCESSING)."""
    match = response.json
    return (
        match["progress"],
        match["stage"],
        match["summary"],
        match["events"],
        match["highlights"],
        match["emotionScores"],
    )


@pytest.mark.gen_test
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_progress_moves_match_to_processing_and_announces(
    api, create_match, published, prefix
):
    match = await create_match()
    response = await api.post(
        f"{prefix}/matches/{match['id']}/progress", {"progress": 41.6, "stage": "detecting"}
    )
    assert response.code == 201
    detail = (await api.get(f"/matches/{match['id']}")).json
    assert (detail["status"], detail["progress"], detail["stage"]) == (
        "PROCESSING",
        42,
        "detecting",
    )
    assert (
        match["id"],
        "progress",
        {"matchId": match["id"], "progress": 42, "stage": "detecting"},
    ) in published


@pytest.mark.gen_test
async def test_progress_minus_one_marks_failed(api, create_match, published):
    match = await create_match()
    response = await api.post(f"/matches/{match['id']}/progress", {"progress": -1})
    assert response.code == 201
    detail = (await api.get(f"/matches/{match['id']}")).json
    assert detail["status"] == "FAILED"
    assert "failed" in detail["failureReason"]
    assert published[-1][1:] == ("progress", {"matchId": match["id"], "progress": -1})


@pytest.mark.gen_test
async def test_progress_never_goes_backwards_nor_reopens_completed(api, create_match):
    match = await create_match()
    await api.post(f"/matches/{match['id']}/progress", {"progress": 60})
    await api.post(f"/matches/{match['id']}/progress", {"progress": 20})
    assert (await api.get(f"/matches/{match['id']}")).json["progress"] == 60
    await api.post(f"/matches/{match['id']}/complete", {"events": []})
    late = await api.post(f"/matches/{match['id']}/progress", {"progress": 80})
    assert late.code == 201 and late.json["ignored"] is True
    detail = (await api.get(f"/matches/{match['id']}")).json
    assert (detail["status"], detail["progress"]) == ("COMPLETED", 100)


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("progress", b"{not json", "body: not valid JSON"),
        ("progress", b"[]", "body: expected object"),
        ("progress", b"{}", "progress: required"),
        ("progress", b'{"progress": "fifty"}', "progress: expected number"),
        ("progress", b'{"progress": -5}', "progress"),
        ("live-event", b'{"type": "GOAL"}', "timestamp: required"),
        ("tracking-update", b'{"frames": [{"t": "x"}]}', "frames[0].t: expected number"),
        (
            "complete",
            b'{"events": [{"timestamp": 1}, {"timestamp": "late"}]}',
            "events[1].timestamp: expected number",
        ),
        (
            "complete",
            b'{"events": [{"timestamp": 1, "confidence": "high"}]}',
            "events[0].confidence: expected number",
        ),
        ("complete", b'{"highlights": []}', "events: required"),
        (
            "complete",
            b'{"events": [], "emotionScores": [{"timestamp": 1, "audioScore": true}]}',
            "emotionScores[0].audioScore: expected number",
        ),
        # PostgreSQL stores NUL characters neither in text nor in JSONB.
        ("progress", b'{"progress": 5, "stage": "a\\u0000b"}', "stage: must not contain NUL"),
        (
            "live-event",
            b'{"timestamp": 1, "description": "\\u0000"}',
            "description: must not contain NUL",
        ),
        (
            "complete",
            b'{"events": [{"timestamp": 1, "commentary": "x\\u0000"}]}',
            "events[0].commentary: must not contain NUL",
        ),
        (
            "complete",
            b'{"events": [], "trackingData": [{"t": 0, "note\\u0000": 1}]}',
            "trackingData[0].note\\u0000: must not contain NUL",
        ),
    ],
)
async def test_bad_bodies_are_refused_naming_the_field(api, create_match, path, body, message):
    match = await create_match()
    response = await api.request("POST", f"/matches/{match['id']}/{path}", body=body)
    assert_error(response, 400, message)
    assert results_of(await api.get(f"/matches/{match['id']}")) == NO_RESULTS


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["progress", "live-event", "tracking-update", "complete"])
async def test_unknown_match_is_404_and_writes_nothing(api, path):
    body = {"progress": 5, "timestamp": 1, "frames": [], "events": []}
    response = await api.post(f"/matches/{uuid.uuid4()}/{path}", body)
    assert_error(response, 404, "Match not found")
    assert (await api.get("/matches")).json == []


@pytest.mark.gen_test
async def test_complete_stores_results_with_contract_clamping(api, create_match, published):
    match = await create_match()
    response = await api.post(f"/matches/{match['id']}/complete", complete_body())
    assert response.code == 201
    detail = (await api.get(f"/matches/{match['id']}")).json
    assert (detail["status"], detail["progress"]) == ("COMPLETED", 100)
    assert [e["timestamp"] for e in detail["events"]] == [3.0, 7.0, 12.5]
    celebrate, dribble, goal = detail["events"]
    assert (celebrate["type"], celebrate["confidence"], celebrate["finalScore"]) == (
        "CELEBRATION",
        0,
        0,
    )
    assert (dribble["type"], dribble["finalScore"]) == ("HIGHLIGHT", 4.2)
    assert (goal["type"], goal["confidence"], goal["finalScore"]) == ("GOAL", 1, 10)
    assert len(goal["commentary"]) == 1000
    assert set(goal) == {
        "id",
        "matchId",
        "timestamp",
        "type",
        "confidence",
        "finalScore",
        "commentary",
        "createdAt",
    }
    assert [h["startTime"] for h in detail["highlights"]] == [1, 10]
    reel = detail["highlights"][1]
    assert (reel["score"], len(reel["eventType"]), len(reel["commentary"])) == (10, 50, 500)
    emotion = detail["emotionScores"][0]
    assert (
        emotion["audioScore"],
        emotion["motionScore"],
        emotion["contextWeight"],
        emotion["finalScore"],
    ) == (1, 0, 0.5, 10)
    assert detail["duration"] == 0
    assert len(detail["summary"]) == 5000
    assert detail["teamColors"] == [[255, 0, 0], [0, 0, 255]]
    assert detail["trackingData"][0]["b"] == [[0.1, 0.2, 0.05, 0.05, 0.9]]
    assert detail["topSpeedKmh"] == 31.5
    assert detail["createdAt"].endswith("Z") and len(detail["createdAt"]) == 24
    assert [event for _, event, _ in published[-2:]] == ["progress", "complete"]
    assert published[-1][2] == {"matchId": match["id"], "eventCount": 3, "highlightCount": 2}


@pytest.mark.gen_test
async def test_complete_twice_keeps_one_copy(api, create_match):
    match = await create_match()
    for _ in range(2):
        assert (await api.post(f"/matches/{match['id']}/complete", complete_body())).code == 201
    detail = (await api.get(f"/matches/{match['id']}")).json
    assert (len(detail["events"]), len(detail["highlights"]), len(detail["emotionScores"])) == (
        3,
        2,
        1,
    )
    listed = (await api.get("/matches")).json[0]
    assert listed["_count"] == {"events": 3, "highlights": 2}


@pytest.mark.gen_test
async def test_a_second_different_complete_replaces_every_field_of_the_first(api, create_match):
    """Guards against a mix of two reports: fields the second leaves out are emptied."""
    match = await create_match()
    await api.post(f"/matches/{match['id']}/complete", complete_body())
    await api.post(f"/matches/{match['id']}/complete", {"events": [], "summary": "again"})
    detail = (await api.get(f"/matches/{match['id']}")).json
    assert detail["summary"] == "again"
    assert [detail[key] for key in ("duration", "teamColors", "trackingData", "topSpeedKmh")] == [
        None
    ] * 4
    assert (detail["events"], detail["highlights"], detail["emotionScores"]) == ([], [], [])


@pytest.mark.gen_test
async def test_callbacks_on_an_upper_case_id_announce_the_lower_case_one(
    api, create_match, published
):
    match = await create_match()
    upper = match["id"].upper()
    assert (await api.post(f"/matches/{upper}/progress", {"progress": 30})).code == 201
    assert (await api.post(f"/matches/{upper}/live-event", {"timestamp": 1})).code == 201
    assert [(match_id, data["matchId"]) for match_id, _, data in published] == [
        (match["id"], match["id"])
    ] * 2


@pytest.mark.gen_test
async def test_progress_between_minus_one_and_zero_is_zero_and_a_long_stage_is_cut(
    api, create_match
):
    """Only -1 means failure (the contract); the stage has no limit there, so it is cut."""
    match = await create_match()
    body = {"progress": -0.4, "stage": "s" * 300}
    assert (await api.post(f"/matches/{match['id']}/progress", body)).code == 201
    detail = (await api.get(f"/matches/{match['id']}")).json
    assert (detail["status"], detail["progress"], len(detail["stage"])) == ("PROCESSING", 0, 200)


@pytest.mark.gen_test
async def test_complete_video_url_replaces_upload_url(api, create_match):
    match = await create_match()
    await api.post(f"/matches/{match['id']}/complete", complete_body(videoUrl="/uploads/new.mp4"))
    assert (await api.get(f"/matches/{match['id']}")).json["uploadUrl"] == "/uploads/new.mp4"


@pytest.mark.gen_test
async def test_live_event_and_tracking_update_are_announced_not_stored(
    api, create_match, published
):
    match = await create_match()
    event = {
        "timestamp": 5,
        "type": "Celebrate",
        "confidence": 3,
        "finalScore": 7,
        "description": "wild",
        "source": "yolo",
    }
    assert (await api.post(f"/matches/{match['id']}/live-event", event)).code == 201
    frames = [{"t": 1.0, "b": [], "p": [[0.1, 0.1, 0.1, 0.1, 4, 0]]}]
    assert (
        await api.post(f"/matches/{match['id']}/tracking-update", {"frames": frames})
    ).code == 201
    (_, kind, data), (_, kind2, data2) = published[-2:]
    assert kind == "matchEvent"
    assert data["event"] == {**event, "type": "CELEBRATION", "confidence": 1}
    assert (kind2, data2) == ("trackingUpdate", {"matchId": match["id"], "frames": frames})
    assert (await api.get(f"/matches/{match['id']}")).json["events"] == []


@pytest.mark.gen_test
async def test_callback_naming_another_run_is_refused(api, create_match):
    match = await create_match()
    stale = str(uuid.uuid4())
    response = await api.post(
        f"/matches/{match['id']}/complete", {"events": [{"timestamp": 1}], "analysis_id": stale}
    )
    assert_error(response, 409, stale)
    response = await api.post(
        f"/matches/{match['id']}/progress", {"progress": 5}, headers={"X-Analysis-Id": "nope"}
    )
    assert_error(response, 400, "analysis_id: expected a UUID")
    assert results_of(await api.get(f"/matches/{match['id']}")) == NO_RESULTS
    current = match["analysis_id"]
    response = await api.post(
        f"/matches/{match['id']}/progress", {"progress": 5}, headers={"X-Analysis-Id": current}
    )
    assert response.code == 201


@pytest.mark.gen_test
@pytest.mark.config(MAX_COMPLETE_BYTES="4KB")
async def test_complete_over_its_configured_limit_is_413(api, create_match):
    """Guards MAX_COMPLETE_BYTES (complete's own limit, not the other callbacks' 1 MB)."""
    match = await create_match()
    url = f"/matches/{match['id']}/complete"
    response = await api.post(url, {"events": [], "summary": "x" * 5000})
    assert_error(response, 413, "larger than the 4000 bytes allowed")
    assert results_of(await api.get(f"/matches/{match['id']}")) == NO_RESULTS
    assert (await api.post(url, {"events": [], "summary": "x" * 3000})).code == 201


@pytest.mark.gen_test
async def test_oversize_chunked_callback_body_is_a_json_413(
    api, create_match, http_server, http_port
):
    """Guards the cap without a Content-Length: the contract's JSON 413, not Tornado's 400."""
    match = await create_match()
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write(
        f"POST /matches/{match['id']}/progress HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    piece = b"x" * 65536
    for _ in range(17):  # past 1 MiB
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head)[1])
    error = json.loads(await reader.readexactly(length))
    writer.close()

    assert head.startswith(b"HTTP/1.1 413 ")
    assert error["message"] == "body: larger than the 1048576 bytes allowed"
    assert results_of(await api.get(f"/matches/{match['id']}")) == NO_RESULTS


@pytest.mark.gen_test
async def test_oversize_callback_body_is_413(api, create_match):
    match = await create_match()
    body = b'{"progress": 1, "stage": "' + b"x" * (1024 * 1024) + b'"}'
    response = await api.request("POST", f"/matches/{match['id']}/progress", body=body)
    assert_error(response, 413, "body")
    assert results_of(await api.get(f"/matches/{match['id']}")) == NO_RESULTS


def send_then_read(port: int, request: bytes) -> bytes:
    """Sends the whole request, then reads until the server closes (a reset fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = bytearray()
        while data := sock.recv(65536):
            answer += data
    return bytes(answer)


@pytest.mark.gen_test
async def test_oversize_callback_sent_whole_still_gets_its_413(
    api, create_match, http_server, http_port
):
    """A client that reads only once its 16 MiB body is sent gets the 413, not a reset."""
    match = await create_match()
    body = b'{"progress": 1, "stage": "' + b"x" * (16 * 2**20) + b'"}'
    request = (
        f"POST /matches/{match['id']}/progress HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    answer = await asyncio.get_running_loop().run_in_executor(
        None, send_then_read, http_port, request
    )

    head, _, document = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(document)["message"] == "body: larger than the 1048576 bytes allowed"
    assert results_of(await api.get(f"/matches/{match['id']}")) == NO_RESULTS
