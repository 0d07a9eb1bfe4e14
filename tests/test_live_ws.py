"""Native WebSocket live updates (`/ws`): join, leave, snapshot, resume, bad input, backpressure."""

import asyncio
import json

import psycopg2
import pytest
import tornado.httpclient
import tornado.websocket

from tests.conftest import drop_database
from tests.live_clients import callback, event


@pytest.mark.gen_test(timeout=30)
async def test_join_gets_snapshot_then_every_update_kind_in_order(
    ws_connect, base_url, create_match
):
    """Guards the message shapes of the issue and that updates arrive numbered, in order."""
    match_id = (await create_match())["id"]
    client = await ws_connect()
    snapshot = await client.join(match_id)
    assert snapshot["type"] == "snapshot"
    assert snapshot["matchId"] == match_id
    assert snapshot["status"] in ("UPLOADED", "PROCESSING", "QUEUED")
    start = snapshot["seq"]

    await callback(base_url, match_id, "progress", {"progress": 40, "stage": "detecting"})
    await callback(base_url, match_id, "live-event", event(12.5))
    frames = [{"t": 1.0, "b": [], "p": []}]
    await callback(base_url, match_id, "tracking-update", {"frames": frames})
    await callback(base_url, match_id, "complete", {"events": [event(12.5)]})

    messages = await client.read_until("complete")
    assert [m["type"] for m in messages] == [
        "progress",
        "matchEvent",
        "trackingUpdate",
        "progress",
        "complete",
    ]
    assert [m["seq"] for m in messages] == list(range(start + 1, start + 6))
    assert all(m["matchId"] == match_id for m in messages)
    assert messages[0]["progress"] == 40 and messages[0]["stage"] == "detecting"
    assert messages[1]["event"]["type"] == "GOAL"
    assert messages[2]["frames"][0]["t"] == 1.0
    assert messages[3]["progress"] == 100
    assert messages[4]["eventCount"] == 1 and messages[4]["highlightCount"] == 0


@pytest.mark.gen_test(timeout=30)
async def test_api_prefixed_path_serves_the_same_endpoint(ws_connect, base_url, create_match):
    """Guards `/api/v1/ws` (newer clients use the prefixed paths)."""
    match_id = (await create_match())["id"]
    client = await ws_connect("/api/v1/ws")
    assert (await client.join(match_id))["type"] == "snapshot"


@pytest.mark.gen_test(timeout=30)
async def test_late_joiner_gets_state_and_the_updates_of_this_run(
    ws_connect, base_url, create_match
):
    """Guards catch-up: a page opened mid-analysis sees what already happened."""
    match_id = (await create_match())["id"]
    await callback(base_url, match_id, "progress", {"progress": 30, "stage": "tracking"})
    await callback(base_url, match_id, "live-event", event(3))
    await callback(base_url, match_id, "live-event", event(7, "FOUL"))

    client = await ws_connect()
    snapshot = await client.join(match_id)
    assert (snapshot["status"], snapshot["progress"], snapshot["stage"]) == (
        "PROCESSING",
        30,
        "tracking",
    )
    replay = [await client.read() for _ in range(3)]
    assert [m["type"] for m in replay] == ["progress", "matchEvent", "matchEvent"]
    assert replay[-1]["seq"] == snapshot["seq"]
    assert replay[2]["event"]["type"] == "FOUL"


@pytest.mark.gen_test(timeout=30)
async def test_rejoin_since_gets_exactly_the_missed_updates(ws_connect, base_url, create_match):
    """Guards resume after a reconnect: no gap, no duplicate, in order."""
    match_id = (await create_match())["id"]
    first = await ws_connect()
    await first.join(match_id)
    await callback(base_url, match_id, "progress", {"progress": 10})
    await callback(base_url, match_id, "progress", {"progress": 20})
    seen = await first.read_until("progress")
    last_seq = seen[-1]["seq"]
    first.connection.close()

    for timestamp in (1, 2, 3):
        await callback(base_url, match_id, "live-event", event(timestamp))

    second = await ws_connect()
    snapshot = await second.join(match_id, since=last_seq)
    assert snapshot["type"] == "snapshot"
    missed = [await second.read() for _ in range(4)]
    assert [m["seq"] for m in missed] == list(range(last_seq + 1, last_seq + 5))
    assert [m.get("progress") for m in missed[:1]] == [20]
    assert [m["event"]["timestamp"] for m in missed[1:]] == [1, 2, 3]

    await callback(base_url, match_id, "progress", {"progress": 50})
    live = await second.read()
    assert (live["seq"], live["progress"]) == (last_seq + 5, 50)


@pytest.mark.gen_test(timeout=30)
async def test_leave_stops_updates_of_that_match_only(ws_connect, base_url, create_match):
    """Guards leave: the left match goes quiet, the other joined match keeps updating."""
    left, kept = (await create_match())["id"], (await create_match())["id"]
    client = await ws_connect()
    await client.join(left)
    await client.join(kept)
    await client.send({"type": "leave", "matchId": left})
    # A message after the leave proves the server handled it before the callbacks below.
    await client.send({"type": "bogus", "matchId": left})
    assert (await client.read())["type"] == "error"

    await callback(base_url, left, "progress", {"progress": 60})
    await callback(base_url, kept, "progress", {"progress": 70})
    message = await client.read()
    assert (message["matchId"], message["progress"]) == (kept, 70)


@pytest.mark.gen_test(timeout=30)
async def test_bad_messages_get_an_error_and_the_connection_stays_usable(
    ws_connect, base_url, create_match
):
    """Guards against a malformed message crashing the handler or closing the socket."""
    match_id = (await create_match())["id"]
    client = await ws_connect()
    cases = [
        ("{not json", "not valid JSON"),
        (json.dumps(["join"]), "expected object"),
        (json.dumps({"type": "join"}), "matchId: required"),
        (json.dumps({"type": "dance", "matchId": match_id}), "type: expected one of"),
        (json.dumps({"type": "join", "matchId": "abc"}), "matchId"),
        (json.dumps({"type": "join", "matchId": match_id, "since": "x"}), "since: expected"),
    ]
    for raw, expected in cases:
        await client.send(raw)
        reply = await client.read()
        assert reply["type"] == "error", raw
        assert expected in reply["message"], (raw, reply)

    unknown = "00000000-0000-4000-8000-000000000000"
    reply = await client.join(unknown)
    assert reply == {"type": "error", "message": "matchId: no such match", "matchId": unknown}
    assert (await client.join(match_id))["type"] == "snapshot"


@pytest.mark.gen_test(timeout=30)
async def test_join_while_the_database_is_down_gets_an_error(
    ws_connect, create_match, pg_server, database_url
):
    """Guards the join path's failure: an `error` message, and the connection stays open."""
    match_id = (await create_match())["id"]
    client = await ws_connect()
    drop_database(pg_server, psycopg2.extensions.parse_dsn(database_url)["dbname"])
    error = await client.join(match_id)
    assert error == {
        "type": "error",
        "message": "matchId: cannot be joined now (database unavailable)",
        "matchId": match_id,
    }
    await client.send("{")
    assert (await client.read())["type"] == "error"


@pytest.mark.gen_test(timeout=30)
async def test_pings_drop_a_dead_peer_and_keep_a_live_one(
    app, ws_connect, base_url, http_port, create_match
):
    """Guards the keep-alive: a peer that never answers pings is dropped; one that answers
    (every WebSocket client library does) stays and keeps receiving."""
    app.settings.update(websocket_ping_interval=0.1, websocket_ping_timeout=0.2)
    match_id = (await create_match())["id"]
    alive = await ws_connect()
    await alive.join(match_id)
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")

    opcodes = []
    while not opcodes or opcodes[-1] != 0x8:  # pings, never answered, then the close frame
        head = await reader.readexactly(2)
        await reader.readexactly(head[1] & 0x7F)  # control frames are short and unmasked
        opcodes.append(head[0] & 0x0F)
    writer.close()
    assert 0x9 in opcodes

    await callback(base_url, match_id, "progress", {"progress": 33})
    assert (await alive.read())["progress"] == 33


@pytest.mark.gen_test(timeout=30)
async def test_disallowed_origin_is_refused_before_the_upgrade(ws_connect, base_url, create_match):
    """Guards the Origin check: a foreign page gets a real 403, a local one connects."""
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await ws_connect(headers={"Origin": "http://evil.test"})
    assert refused.value.code == 403
    client = await ws_connect(headers={"Origin": "http://localhost:3000"})
    match_id = (await create_match())["id"]
    assert (await client.join(match_id))["type"] == "snapshot"


@pytest.mark.parametrize(
    "bound", [{"ws_outbox_limit": 4}, {"ws_outbox_bytes": 1_000_000}], ids=["count", "bytes"]
)
@pytest.mark.gen_test(timeout=60)
async def test_a_client_that_does_not_read_is_dropped_and_others_are_not_delayed(
    app, ws_connect, base_url, create_match, bound
):
    """Guards backpressure: a slow consumer's queue is bounded in messages and in bytes; it
    is closed, others keep up."""
    app.settings.update(bound)
    match_id = (await create_match())["id"]
    slow, fast = await ws_connect(), await ws_connect()
    await slow.join(match_id)
    await fast.join(match_id)

    frames = [{"t": 0.0, "b": [], "p": [], "pad": "x" * 250_000}]
    live = app.settings["live"]
    for _ in range(80):
        await live.publish(match_id, "trackingUpdate", {"matchId": match_id, "frames": frames})
        assert (await fast.read())["type"] == "trackingUpdate"

    received = 0
    while await slow.connection.read_message() is not None:
        received += 1
    assert received < 80
    assert slow.connection.close_code == 1008
    assert slow.connection.close_reason == "slow consumer"


@pytest.mark.gen_test(timeout=60)
async def test_a_client_that_reads_late_gets_every_update_in_order(
    app, ws_connect, base_url, create_match
):
    """Guards the outbox draining: once a client that fell behind reads again, every queued
    update arrives, in number order, none stuck behind a frame the socket took whole."""
    match_id = (await create_match())["id"]
    client = await ws_connect()
    start = (await client.join(match_id))["seq"]

    frames = [{"t": 0.0, "b": [], "p": [], "pad": "x" * 250_000}]
    live = app.settings["live"]
    for _ in range(40):
        await live.publish(match_id, "trackingUpdate", {"matchId": match_id, "frames": frames})

    seqs = [(await client.read())["seq"] for _ in range(40)]
    assert seqs == list(range(start + 1, start + 41))


@pytest.mark.parametrize("boxes", [None, 20, 4000], ids=["7-bit", "16-bit", "64-bit"])
@pytest.mark.gen_test(timeout=30)
async def test_updates_of_every_frame_length_arrive_intact(
    ws_connect, base_url, create_match, boxes
):
    """Guards the frames built once per update: each of RFC 6455's three length encodings
    (under 126 bytes, under 64 KiB, above) reads back as the update sent."""
    match_id = (await create_match())["id"]
    client = await ws_connect()
    await client.join(match_id)
    players = [[0.125, 0.25, 0.5, 0.75, n, n % 2] for n in range(boxes or 0)]
    frames = [] if boxes is None else [{"t": 1.0, "b": [], "p": players}]
    await callback(base_url, match_id, "tracking-update", {"frames": frames})

    [message] = await client.read_until("trackingUpdate")
    assert message["frames"] == frames
