"""The HTTP server, knowing which requests are in flight so that shutdown can let them finish.

Tornado's `HTTPServer.close_all_connections()` cuts requests still being served; Tornado's
maintainers suggest wrapping the HTTP delegate interfaces to know when they are over
(tornadoweb/tornado#3009). A request counts from its headers until its answer is finished,
its connection closes, or it is upgraded to a WebSocket (which is closed on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from tornado import httputil
from tornado.httpserver import HTTPServer


class DrainingHTTPServer(HTTPServer):
    def initialize(self, *args, **kwargs) -> None:
        super().initialize(*args, **kwargs)
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def drain(self, timeout: float) -> int:
        """Stops accepting connections and waits up to `timeout` seconds for requests in flight.

        Returns how many are still running.
        """
        self.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        return self.in_flight

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        tracked = _TrackedConnection(request_conn, self._request_started, self._request_ended)
        return _TrackedDelegate(super().start_request(server_conn, tracked), tracked)

    def _request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _request_ended(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()


class _TrackedConnection(httputil.HTTPConnection):
    """A request's connection that reports when the request is over (once)."""

    def __init__(
        self,
        connection: httputil.HTTPConnection,
        started: Callable[[], None],
        ended: Callable[[], None],
    ) -> None:
        self._connection = connection
        self._started = started
        self._ended = ended
        self._open = False

    def __getattr__(self, name: str):
        # Everything else a handler uses (`context`, `set_max_body_size`, ...) as it is.
        return getattr(self._connection, name)

    def begin(self) -> None:
        self._open = True
        self._started()

    def end(self) -> None:
        if self._open:
            self._open = False
            self._ended()

    def write_headers(self, *args, **kwargs) -> Awaitable[None]:
        return self._connection.write_headers(*args, **kwargs)

    def write(self, chunk: bytes) -> Awaitable[None]:
        return self._connection.write(chunk)

    def finish(self) -> None:
        self._connection.finish()
        self.end()

    def detach(self):
        self.end()
        return self._connection.detach()

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        if callback is None:
            self._connection.set_close_callback(None)
            return

        def closed() -> None:
            self.end()
            callback()

        self._connection.set_close_callback(closed)


class _TrackedDelegate(httputil.HTTPMessageDelegate):
    """Starts the count when a request's headers arrive; ends it if the client goes first."""

    def __init__(
        self, delegate: httputil.HTTPMessageDelegate, connection: _TrackedConnection
    ) -> None:
        self._delegate = delegate
        self._connection = connection

    def headers_received(self, start_line, headers):
        self._connection.begin()
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes):
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        self._delegate.finish()

    def on_connection_close(self) -> None:
        self._connection.end()
        self._delegate.on_connection_close()
