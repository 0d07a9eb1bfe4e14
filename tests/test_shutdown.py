"""Graceful shutdown of a real server process on SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
import tornado.websocket
from sqlalchemy import func, select

from store.tables import matches
from tests.conftest import SAMPLE_MP4, wait_until
from tests.queries import match_row, queue_is_empty, queued_jobs
from tests.test_durability import create_match
from tests.test_uploads import files_in, upload_head, video_form

COMPLETE = {"events": [{"timestamp": 3.0, "type": "GOAL"}], "summary": "finished during shutdown"}


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectionResetError):
        # Reset: the connection was in the backlog when the listening socket closed.
        return True
    writer.close()
    return False


@pytest.mark.gen_test(timeout=60)
async def test_sigterm_lets_a_slow_callback_finish(start_server, client, inference, database):
    """Guards against a restart cutting off an engine's `complete` halfway through its body."""
    server = await start_server(SHUTDOWN_GRACE_SECONDS="20")
    match = await create_match(client, server)
    await inference.wait_for_jobs(1)
    body = json.dumps(COMPLETE).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"POST /matches/{match['id']}/complete HTTP/1.1\r\nHost: orchestrator\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    # The server has read the headers (so the request is in flight) once it says continue.
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 (Continue)\r\n\r\n"
    writer.write(body[: len(body) // 2])
    await writer.drain()

    server.signal(signal.SIGTERM)
    await wait_until(lambda: refuses_connections(server.port))
    writer.write(body[len(body) // 2 :])
    status_line = await reader.readline()
    writer.close()

    assert status_line.startswith(b"HTTP/1.1 201 ")
    assert await server.exited() == 0
    row = await match_row(database, match["id"])
    assert (row["status"], row["summary"]) == ("COMPLETED", COMPLETE["summary"])
    assert await queue_is_empty(database)


@pytest.mark.gen_test(timeout=60)
async def test_sigterm_gives_back_a_job_being_sent(start_server, client, inference, database):
    """Guards against a job left claimed (stuck until its lease ends) by a clean shutdown."""
    inference.hold()
    server = await start_server(SHUTDOWN_GRACE_SECONDS="0.3")
    match = await create_match(client, server)
    await inference.wait_for_attempts(1)

    server.signal(signal.SIGTERM)
    assert await server.exited() == 0
    [job] = await queued_jobs(database, match["id"])
    assert (job["claimed_until"], job["attempts"]) == (None, 0)

    await start_server()
    await inference.wait_for_attempts(2)
    inference.let_go()
    await wait_until(lambda: queue_is_empty(database))
    assert (await match_row(database, match["id"]))["status"] == "PROCESSING"


async def read_until_closed(connection: tornado.websocket.WebSocketClientConnection) -> list:
    messages = []
    while (message := await connection.read_message()) is not None:
        messages.append(message)
    return messages


@pytest.mark.gen_test(timeout=60)
async def test_sigterm_closes_websockets_with_going_away(start_server, client, inference):
    """Guards against watchers left hanging (or told not to reconnect) by a restart.

    The long grace shows that open WebSockets do not hold the shutdown up.
    """
    server = await start_server(SHUTDOWN_GRACE_SECONDS="30")
    match = await create_match(client, server)
    ws_url = server.url.replace("http://", "ws://")
    native = await tornado.websocket.websocket_connect(f"{ws_url}/ws")
    await native.write_message(json.dumps({"type": "join", "matchId": match["id"]}))
    assert json.loads(await native.read_message())["type"] == "snapshot"
    engine_io = await tornado.websocket.websocket_connect(
        f"{ws_url}/socket.io/?EIO=4&transport=websocket"
    )
    assert (await engine_io.read_message()).startswith("0{")  # engine.io "open"
    await engine_io.write_message("40")  # Socket.IO "connect"
    assert (await engine_io.read_message()).startswith("40{")

    server.signal(signal.SIGTERM)
    await read_until_closed(native)
    await read_until_closed(engine_io)
    assert (native.close_code, native.close_reason) == (1001, "going away")
    assert (engine_io.close_code, engine_io.close_reason) == (1001, "going away")
    assert await server.exited(timeout=10) == 0


@pytest.mark.gen_test(timeout=60)
async def test_sigint_exits_cleanly_and_unsigned_callbacks_are_announced_once(start_server):
    server = await start_server()
    server.signal(signal.SIGINT)
    assert await server.exited() == 0
    assert server.log().count("CALLBACK_SECRET is not set") == 1


@pytest.mark.gen_test(timeout=60)
async def test_no_unsigned_warning_with_a_secret(start_server):
    server = await start_server(CALLBACK_SECRET="shared")
    server.signal(signal.SIGTERM)
    assert await server.exited() == 0
    assert "CALLBACK_SECRET" not in server.log()


def partial_files(upload_dir) -> list[str]:
    return [name for name in files_in(upload_dir) if name.startswith(".partial-")]


UPLOAD_BODY = video_form(SAMPLE_MP4.read_bytes() + bytes(1 << 20))


async def sigterm_mid_upload(start_server, upload_dir, grace: str):
    """Starts a server, sends half an upload as a slow client would, then SIGTERM.

    Returns the server and the upload's connection.
    """
    server = await start_server(SHUTDOWN_GRACE_SECONDS=grace)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = upload_head({"Content-Length": str(len(UPLOAD_BODY))})
    writer.write(head + UPLOAD_BODY[: len(UPLOAD_BODY) // 2])
    await writer.drain()
    await wait_until(lambda: partial_files(upload_dir))
    server.signal(signal.SIGTERM)
    return server, reader, writer


@pytest.mark.gen_test(timeout=60)
async def test_sigterm_lets_a_slow_upload_finish(
    start_server, client, inference, database, upload_dir
):
    """An upload under way when a restart begins is stored whole, and its job survives."""
    server, reader, writer = await sigterm_mid_upload(start_server, upload_dir, grace="20")
    await wait_until(lambda: refuses_connections(server.port))
    writer.write(UPLOAD_BODY[len(UPLOAD_BODY) // 2 :])
    status_line = await reader.readline()
    writer.close()

    assert status_line.startswith(b"HTTP/1.1 201 ")
    assert await server.exited() == 0
    [stored] = files_in(upload_dir)
    assert (upload_dir / stored).stat().st_size == len(SAMPLE_MP4.read_bytes()) + (1 << 20)
    await start_server()
    [job] = await inference.wait_for_jobs(1)
    assert job["video_url"] == str(upload_dir / stored)
    await wait_until(lambda: queue_is_empty(database))


@pytest.mark.gen_test(timeout=60)
async def test_sigterm_cuts_an_upload_stalled_past_the_grace(
    start_server, client, inference, database, upload_dir
):
    """A client that stops sending does not hold a restart up, and leaves no half file."""
    server, reader, writer = await sigterm_mid_upload(start_server, upload_dir, grace="0.3")
    assert await server.exited() == 0
    assert await reader.read() == b""
    writer.close()

    assert files_in(upload_dir) == []
    assert await database.fetch_value(select(func.count()).select_from(matches)) == 0
    assert await queue_is_empty(database)
    assert inference.attempts == 0
