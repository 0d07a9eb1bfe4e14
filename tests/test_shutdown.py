"""Graceful shutdown of a real server process on SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import psutil
import pytest
import socketio
import tornado.websocket
from psycopg2.extensions import make_dsn, parse_dsn
from sqlalchemy import func, select

from store.tables import matches
from tests.conftest import SAMPLE_MP4, settings_env, wait_until
from tests.live_clients import FreezableProxy
from tests.queries import match_row, queue_is_empty, queued_jobs
from tests.server_process import ServerProcess
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
async def test_a_stop_with_the_redis_bus_leaves_nothing_unfinished(start_server, redis_server):
    """Guards the bus's own clean-up: its pending read of the subscription failed on the
    closed connection after the loop had stopped, logging an unhandled exception."""
    server = await start_server(REDIS_URL=redis_server.url)
    server.signal(signal.SIGTERM)
    assert await server.exited() == 0
    assert "Traceback" not in server.log()


@pytest.mark.gen_test(timeout=60)
async def test_no_unsigned_warning_with_a_secret(start_server):
    server = await start_server(CALLBACK_SECRET="shared")
    server.signal(signal.SIGTERM)
    assert await server.exited() == 0
    assert "CALLBACK_SECRET" not in server.log()


def partial_files(upload_dir) -> list[str]:
    return [name for name in files_in(upload_dir) if name.startswith(".partial-")]


UPLOAD_BODY = video_form(SAMPLE_MP4.read_bytes() + bytes(1 << 20))


async def sigterm_mid_upload(server, upload_dir):
    """Sends half an upload as a slow client would, then SIGTERM; returns the upload's
    connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = upload_head({"Content-Length": str(len(UPLOAD_BODY))})
    writer.write(head + UPLOAD_BODY[: len(UPLOAD_BODY) // 2])
    await writer.drain()
    await wait_until(lambda: partial_files(upload_dir))
    server.signal(signal.SIGTERM)
    return reader, writer


@pytest.mark.gen_test(timeout=60)
async def test_sigterm_lets_a_slow_upload_finish(
    start_server, client, inference, database, upload_dir
):
    """An upload under way when a restart begins is stored whole, and its job survives."""
    server = await start_server(SHUTDOWN_GRACE_SECONDS="20")
    reader, writer = await sigterm_mid_upload(server, upload_dir)
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
    server = await start_server(SHUTDOWN_GRACE_SECONDS="0.3")
    reader, writer = await sigterm_mid_upload(server, upload_dir)
    assert await server.exited() == 0
    assert await reader.read() == b""
    writer.close()

    assert files_in(upload_dir) == []
    assert await database.fetch_value(select(func.count()).select_from(matches)) == 0
    assert await queue_is_empty(database)
    assert inference.attempts == 0


def connected_to(process: subprocess.Popen, port: int) -> bool:
    """Whether `process` has a TCP connection open to 127.0.0.1:`port`."""
    return any(
        connection.raddr and connection.raddr.port == port
        for connection in psutil.Process(process.pid).net_connections("tcp")
    )


@pytest.mark.gen_test(timeout=60)
async def test_sigterm_during_start_up_stops_cleanly_once_started(request, database_url, tmp_path):
    """Guards against a stop signal during start-up (here: migrations connecting to a database
    that is slow to answer) killing the process outright instead of stopping it."""
    settings = parse_dsn(database_url)
    host, port = settings.get("host", "/var/run/postgresql"), settings.get("port", "5432")
    # The embedded PostgreSQL the tests fall back to listens on a Unix socket only.
    proxy = FreezableProxy(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else int(port))
    await proxy.start()
    proxy.freeze()
    through_proxy = make_dsn(database_url, host="127.0.0.1", port=proxy.port)
    server = ServerProcess(
        settings_env(request, DATABASE_URL=through_proxy), tmp_path / "server.log"
    )
    try:
        await wait_until(lambda: connected_to(server.process, proxy.port))
        server.signal(signal.SIGTERM)
        proxy.thaw()
        assert await server.exited() == 0, server.log()
    finally:
        server.kill()
        await proxy.stop()


@pytest.mark.gen_test(timeout=60)
async def test_sigterm_ends_socketio_polling_at_once(start_server):
    """Guards against a long-polling Socket.IO client holding every shutdown up for the whole
    grace (its pending poll is a request in flight), then being cut with no "close"."""
    server = await start_server(SHUTDOWN_GRACE_SECONDS="30")
    client = socketio.AsyncClient(reconnection=False)
    disconnected = asyncio.Event()
    client.on("disconnect", lambda reason: disconnected.set())
    await client.connect(server.url, transports=["polling"], wait_timeout=10)
    try:
        server.signal(signal.SIGTERM)
        # Well within the 30 s grace: waiting it out would fail here.
        assert await server.exited(timeout=10) == 0
        await asyncio.wait_for(disconnected.wait(), 10)
    finally:
        await client.disconnect()
        # python-engineio's client empties its send queue on the server's "close" while its
        # write loop still waits on it (for up to 30 s): end its tasks with the test.
        tasks = [task for task in (client.eio.read_loop_task, client.eio.write_loop_task) if task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.gen_test(timeout=60)
async def test_socketio_requests_during_shutdown_are_refused(start_server, upload_dir):
    """Guards against a Socket.IO client that reconnects over a kept-alive connection while
    the server drains: its new session's polls would hold the shutdown up again."""
    server = await start_server(SHUTDOWN_GRACE_SECONDS="20")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: orchestrator\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    [length] = [line.split(b":")[1] for line in head.split(b"\r\n") if b"Content-Length" in line]
    await reader.readexactly(int(length))  # the connection stays open for the next request

    # An upload under way keeps the server draining.
    _, upload = await sigterm_mid_upload(server, upload_dir)
    await wait_until(lambda: refuses_connections(server.port))
    writer.write(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: orchestrator\r\n\r\n")
    status_line = await reader.readline()
    writer.close()
    upload.close()
    assert status_line.startswith(b"HTTP/1.1 503 ")
