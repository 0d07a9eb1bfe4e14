"""A small real HTTP server that plays the inference engine: records jobs, can refuse them."""

from __future__ import annotations

import asyncio
import json
import socket

import tornado.httpserver
import tornado.web


class FakeInference:
    """`POST /api/v1/analyze` recorder.

    `refuse_next(n, status)` makes the next n jobs fail with that status (503 by default);
    `wait_for_jobs(n)` waits until n jobs were accepted.
    """

    def __init__(self) -> None:
        self.jobs: list[dict] = []
        self.refusals: list[int] = []
        self.attempts = 0
        self._changed = asyncio.Condition()
        self._server: tornado.httpserver.HTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = tornado.web.Application([(r"/api/v1/analyze", _AnalyzeHandler, {"engine": self})])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port or self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets([sock])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

    def refuse_next(self, count: int, status: int = 503) -> None:
        self.refusals.extend([status] * count)

    async def record(self, job: dict) -> int:
        async with self._changed:
            self.attempts += 1
            status = self.refusals.pop(0) if self.refusals else 202
            if status < 300:
                self.jobs.append(job)
            self._changed.notify_all()
            return status

    async def wait_for_jobs(self, count: int, timeout: float = 10.0) -> list[dict]:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.jobs) >= count), timeout)
        return self.jobs

    async def wait_for_attempts(self, count: int, timeout: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.attempts >= count), timeout)


class _AnalyzeHandler(tornado.web.RequestHandler):
    def initialize(self, engine: FakeInference) -> None:
        self.engine = engine

    async def post(self) -> None:
        status = await self.engine.record(json.loads(self.request.body))
        self.set_status(status)
        self.finish({"accepted": status < 300})
