"""What graceful shutdown needs to know: requests in flight, and open WebSockets.

Tornado's `HTTPServer.close_all_connections()` cuts requests still being served; Tornado's
maintainers suggest wrapping the HTTP delegate interfaces to know when they are over
(tornadoweb/tornado#3009). A request counts from its headers until its answer is finished,
its connection closes, or it is upgraded to a WebSocket. WebSockets are not the HTTP
server's any more once upgraded (`close_all_connections()` leaves them open): their handlers
register in `OpenWebSockets`, which closes them with 1001 "going away".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import tornado.websocket
from tornado import httputil
from tornado.httpserver import HTTPServer

# RFC 6455 7.4.1: 1001, the endpoint is going away (a server going down).
GOING_AWAY = 1001


class DrainingHTTPServer(HTTPServer):
    """An HTTPServer that counts its requests in flight, so that `drain()` can wait for them."""

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


class OpenWebSockets:
    """This process's open WebSockets. Handlers `add` themselves in `open()`, `discard` in
    `on_close()`; shutdown closes the rest."""

    def __init__(self) -> None:
        self._open: set[tornado.websocket.WebSocketHandler] = set()
        self._none_open = asyncio.Event()
        self._none_open.set()

    def add(self, handler: tornado.websocket.WebSocketHandler) -> None:
        self._open.add(handler)
        self._none_open.clear()

    def discard(self, handler: tornado.websocket.WebSocketHandler) -> None:
        self._open.discard(handler)
        if not self._open:
            self._none_open.set()

    async def close_all(self, timeout: float) -> int:
        """Closes each with 1001 "going away"; waits up to `timeout` s for the clients to answer.

        Returns how many did not answer in time (Tornado drops those a few seconds later).
        """
        for handler in list(self._open):
            handler.close(GOING_AWAY, "going away")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._none_open.wait()
        return len(self._open)
