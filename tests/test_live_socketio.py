"""Socket.IO live updates as the existing frontend uses them, over both transports."""

import json

import psycopg2
import pytest
import tornado.httpclient
import tornado.websocket

from tests.live_clients import callback, event

TRANSPORTS = [pytest.param(["websocket"], id="websocket"), pytest.param(None, id="polling-upgrade")]


@pytest.mark.parametrize("transports", TRANSPORTS)
@pytest.mark.gen_test(timeout=30)
async def test_join_then_all_four_event_kinds(
    http_server, base_url, sio_connect, transports, create_match
):
    """Guards the contract's joinMatch → joined (+ack) and the four live event shapes."""
    match_id = (await create_match())["id"]
    watcher = await sio_connect(base_url, transports)
    ack = await watcher.client.call("joinMatch", match_id, timeout=10)
    assert ack == {"event": "joined", "data": match_id}
    assert (await watcher.wait_for(1, "joined")) == [("joined", match_id)]

    await callback(base_url, match_id, "progress", {"progress": 40, "stage": "detecting"})
    await callback(base_url, match_id, "live-event", event(12.5))
    await callback(
        base_url, match_id, "tracking-update", {"frames": [{"t": 1.0, "b": [], "p": []}]}
    )
    await callback(base_url, match_id, "complete", {"events": [event(12.5)], "highlights": []})

    await watcher.wait_for(1, "complete")
    live = [item for item in watcher.received if item[0] not in ("joined", "snapshot")]
    assert live == [
        ("progress", {"matchId": match_id, "progress": 40, "stage": "detecting"}),
        ("matchEvent", {"matchId": match_id, "event": live[1][1]["event"]}),
        ("trackingUpdate", {"matchId": match_id, "frames": [{"t": 1.0, "b": [], "p": []}]}),
        ("progress", {"matchId": match_id, "progress": 100}),
        ("complete", {"matchId": match_id, "eventCount": 1, "highlightCount": 0}),
    ]
    assert live[1][1]["event"]["type"] == "GOAL"
    assert watcher.client.transport() == "websocket"


@pytest.mark.parametrize("transports", TRANSPORTS)
@pytest.mark.gen_test(timeout=30)
async def test_two_matches_on_one_connection(
    http_server, base_url, sio_connect, transports, create_match
):
    """Guards rooms: one client watching two matches gets each one's updates, tagged by id."""
    first, second = (await create_match())["id"], (await create_match())["id"]
    watcher = await sio_connect(base_url, transports)
    await watcher.client.emit("joinMatch", first)
    await watcher.client.emit("joinMatch", second)
    await watcher.wait_for(2, "joined")

    await callback(base_url, first, "progress", {"progress": 11})
    await callback(base_url, second, "progress", {"progress": 22})
    progress = await watcher.wait_for(2, "progress")
    assert [(data["matchId"], data["progress"]) for _, data in progress] == [
        (first, 11),
        (second, 22),
    ]


@pytest.mark.parametrize("transports", TRANSPORTS)
@pytest.mark.gen_test(timeout=30)
async def test_client_joining_after_three_events_receives_them(
    http_server, base_url, sio_connect, transports, create_match
):
    """Guards catch-up for the frontend: a refresh mid-analysis replays this run's updates."""
    match_id = (await create_match())["id"]
    await callback(base_url, match_id, "progress", {"progress": 25, "stage": "tracking"})
    await callback(base_url, match_id, "live-event", event(4))
    await callback(base_url, match_id, "live-event", event(9, "SAVE"))

    watcher = await sio_connect(base_url, transports)
    await watcher.client.emit("joinMatch", match_id)
    await watcher.wait_for(1, "matchEvent")
    received = await watcher.wait_for(5)
    names = [name for name, _ in received]
    assert names == ["joined", "snapshot", "progress", "matchEvent", "matchEvent"]
    assert received[1][1]["progress"] == 25
    assert received[4][1]["event"]["type"] == "SAVE"

    await callback(base_url, match_id, "progress", {"progress": 50})
    progress = await watcher.wait_for(2, "progress")
    assert progress[-1][1]["progress"] == 50
    assert len(watcher.received) == 6, "a replayed update arrived twice"


@pytest.mark.gen_test(timeout=30)
async def test_reanalyze_clears_the_catch_up_log(http_server, base_url, sio_connect, create_match):
    """Guards that a new run's watchers are not replayed the previous run's events."""
    match_id = (await create_match())["id"]
    await callback(base_url, match_id, "live-event", event(4))
    await tornado.httpclient.AsyncHTTPClient().fetch(
        f"{base_url}/matches/{match_id}/reanalyze", method="POST", body=""
    )

    watcher = await sio_connect(base_url, ["websocket"])
    await watcher.client.emit("joinMatch", match_id)
    received = await watcher.wait_for(3)
    assert [name for name, _ in received] == ["joined", "snapshot", "progress"]
    assert received[2][1]["progress"] == 0


@pytest.mark.gen_test(timeout=30)
async def test_unknown_and_malformed_ids_are_still_answered(http_server, base_url, sio_connect):
    """Guards the old behaviour: any id joins (and is acknowledged), it just never updates."""
    watcher = await sio_connect(base_url, ["websocket"])
    for match_id in ("not-a-uuid", "00000000-0000-4000-8000-000000000000"):
        ack = await watcher.client.call("joinMatch", match_id, timeout=10)
        assert ack == {"event": "joined", "data": match_id}
    assert [data for _, data in await watcher.wait_for(2, "joined")] == [
        "not-a-uuid",
        "00000000-0000-4000-8000-000000000000",
    ]


@pytest.mark.gen_test(timeout=30)
async def test_join_with_no_id_or_extra_arguments_is_answered(http_server, base_url, sio_connect):
    """Guards the handler's signature: a client's odd call gets an answer, not a server error."""
    watcher = await sio_connect(base_url, ["websocket"])
    assert await watcher.client.call("joinMatch", timeout=10) == {"event": "joined", "data": None}
    ack = await watcher.client.call("joinMatch", ("first", "second"), timeout=10)
    assert ack == {"event": "joined", "data": "first"}
    await watcher.client.emit("leaveMatch")
    assert await watcher.client.call("joinMatch", "again", timeout=10) == {
        "event": "joined",
        "data": "again",
    }


@pytest.mark.gen_test(timeout=30)
async def test_foreign_origin_is_refused_on_the_websocket_transport(http_server, base_url):
    """Guards CORS_ORIGIN on Socket.IO's WebSocket upgrade (a 403 before the upgrade)."""
    url = base_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    request = tornado.httpclient.HTTPRequest(url, headers={"Origin": "http://evil.test"})
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await tornado.websocket.websocket_connect(request)
    assert refused.value.code == 403
    allowed = tornado.httpclient.HTTPRequest(url, headers={"Origin": "http://localhost:3000"})
    connection = await tornado.websocket.websocket_connect(allowed)
    connection.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_websocket_client_that_does_not_read_is_dropped(
    app, http_server, base_url, create_match
):
    """Guards the server's memory against a Socket.IO client that stops reading: engine.io
    would queue without bound; the socket is closed once ws_outbox_bytes wait for it."""
    app.settings["ws_outbox_bytes"] = 1_000_000
    match_id = (await create_match())["id"]
    url = base_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    connection = await tornado.websocket.websocket_connect(url)
    assert (await connection.read_message()).startswith("0")  # engine.io open
    await connection.write_message("40")  # Socket.IO connect
    assert (await connection.read_message()).startswith("40")
    await connection.write_message("42" + json.dumps(["joinMatch", match_id]))

    frames = [{"t": 0.0, "b": [], "p": [], "pad": "x" * 250_000}]
    live = app.settings["live"]
    for _ in range(80):
        await live.publish(match_id, "trackingUpdate", {"matchId": match_id, "frames": frames})

    received = 0
    while await connection.read_message() is not None:
        received += 1
    assert received < 80
    assert connection.close_code == 1008


@pytest.mark.gen_test(timeout=30)
async def test_foreign_origin_is_refused(http_server, base_url):
    """Guards CORS_ORIGIN on Socket.IO: polling from a foreign page is refused, local is allowed."""
    handshake = base_url + "/socket.io/?EIO=4&transport=polling"
    client = tornado.httpclient.AsyncHTTPClient()
    with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
        await client.fetch(handshake, headers={"Origin": "http://evil.test"})
    assert refused.value.code == 400
    allowed = await client.fetch(handshake, headers={"Origin": "http://localhost:3000"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


@pytest.mark.parametrize("transports", TRANSPORTS)
@pytest.mark.gen_test(timeout=30)
async def test_a_leave_sent_right_after_a_join_is_applied_after_it(
    http_server, base_url, sio_connect, transports, create_match
):
    """Guards the order of a client's events: python-socketio handles each in a task of its
    own, and a leave that overtook its join was lost (the client kept getting updates)."""
    left, watched = (await create_match())["id"], (await create_match())["id"]
    for _ in range(30):  # a catch-up long enough for the leave to arrive during it
        await callback(base_url, left, "live-event", event(1))
    watcher = await sio_connect(base_url, transports)
    await watcher.client.emit("joinMatch", left)
    await watcher.client.emit("leaveMatch", left)
    await watcher.client.emit("joinMatch", watched)
    await watcher.wait_for(2, "snapshot")

    await callback(base_url, left, "progress", {"progress": 50})
    await callback(base_url, watched, "progress", {"progress": 60})
    await watcher.wait_for(1, "progress")
    assert [data for name, data in watcher.received if name == "progress"] == [
        {"matchId": watched, "progress": 60}
    ]


@pytest.mark.gen_test(timeout=30)
async def test_a_join_while_the_database_cannot_be_read_is_still_answered_and_served(
    services, http_server, base_url, sio_connect, create_match, monkeypatch
):
    """Guards the frontend, which never asks again: a join that cannot read the catch-up
    still gets `joined` and its ack, then the match's updates, missed ones included."""
    match_id = (await create_match())["id"]
    await callback(base_url, match_id, "progress", {"progress": 10})

    async def unreadable(match_id):
        raise psycopg2.OperationalError("the database is down")

    monkeypatch.setattr(services.live, "_read_state", unreadable)
    watcher = await sio_connect(base_url, ["websocket"])
    ack = await watcher.client.call("joinMatch", match_id, timeout=10)
    assert ack == {"event": "joined", "data": match_id}
    monkeypatch.undo()

    await callback(base_url, match_id, "progress", {"progress": 20})
    progress = await watcher.wait_for(2, "progress")
    assert [data["progress"] for _, data in progress] == [10, 20]
