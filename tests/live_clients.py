"""Test clients for live updates: callbacks in, native WebSocket and Socket.IO out."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import redis
import socketio
import tornado.httpclient
import tornado.websocket

from bench.server import free_port

EVENTS = ("joined", "snapshot", "progress", "matchEvent", "trackingUpdate", "complete")
READ_SECONDS = 10


async def create_match_over_http(base_url: str) -> str:
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        base_url + "/matches/youtube",
        method="POST",
        body=json.dumps({"url": "https://video.test/match.mp4"}),
    )
    return json.loads(response.body)["id"]


async def callback(base_url: str, match_id: str, kind: str, body: dict) -> int:
    """Posts an inference callback (`progress`, `live-event`, ...); returns the status code."""
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        f"{base_url}/matches/{match_id}/{kind}", method="POST", body=json.dumps(body)
    )
    return response.code


def event(timestamp: float, kind: str = "GOAL") -> dict:
    return {"timestamp": timestamp, "type": kind, "confidence": 0.9, "finalScore": 8}


class NativeClient:
    """A `/ws` connection that reads JSON messages."""

    def __init__(self, connection: tornado.websocket.WebSocketClientConnection) -> None:
        self.connection = connection

    async def send(self, message: dict | str) -> None:
        await self.connection.write_message(
            message if isinstance(message, str) else json.dumps(message)
        )

    async def join(self, match_id: str, since: int | None = None) -> dict:
        """Joins and returns the snapshot (or the error) the server answers with."""
        request = {"type": "join", "matchId": match_id}
        if since is not None:
            request["since"] = since
        await self.send(request)
        return await self.read()

    async def read(self, timeout: float = READ_SECONDS) -> dict:
        message = await asyncio.wait_for(self.connection.read_message(), timeout)
        assert message is not None, f"connection closed ({self.connection.close_code})"
        return json.loads(message)

    async def read_until(self, kind: str) -> list[dict]:
        """Messages up to and including the first of type `kind`."""
        messages = [await self.read()]
        while messages[-1]["type"] != kind:
            messages.append(await self.read())
        return messages


class SocketIOWatcher:
    """A python-socketio client that records every live event it receives, in order."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: list[tuple[str, object]] = []
        self._arrived = asyncio.Event()
        for name in EVENTS:
            self.client.on(name, self._recorder(name))

    def _recorder(self, name: str):
        async def record(data: object) -> None:
            self.received.append((name, data))
            self._arrived.set()

        return record

    async def connect(self, base_url: str, transports: list[str] | None = None) -> None:
        await self.client.connect(base_url, transports=transports, wait_timeout=READ_SECONDS)

    async def wait_for(self, count: int, name: str | None = None) -> list[tuple[str, object]]:
        """Waits until `count` events (named `name`, if given) arrived; returns those."""

        def matching() -> list[tuple[str, object]]:
            return [item for item in self.received if name is None or item[0] == name]

        async def enough() -> None:
            while len(matching()) < count:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(enough(), READ_SECONDS)
        return matching()


class FreezableProxy:
    """A TCP proxy on loopback to `target` (a loopback port, or the path of a Unix socket)
    that can stop passing bytes on (`freeze`), as a network that drops packets does, and pass
    them on again (`thaw`)."""

    def __init__(self, target: int | str) -> None:
        self.target = target
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.close()
        for connection in self._connections:
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        try:
            if isinstance(self.target, str):
                upstream = await asyncio.open_unix_connection(self.target)
            else:
                upstream = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, upstream[1]), self._pipe(upstream[0], writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


class RedisServer:
    """A private `redis-server` on a free loopback port that a test can kill and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, (
            "redis-server is not on the PATH: install it (Debian: apt-get install redis-server)"
        )
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
        )

    async def answers(self) -> bool:
        def ping() -> bool:
            try:
                with redis.Redis.from_url(self.url) as client:
                    return client.ping()
            except redis.ConnectionError:
                return False

        return await asyncio.to_thread(ping)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
