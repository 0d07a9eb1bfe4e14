"""What every HTTP handler shares: CORS, JSON answers, JSON errors, validated JSON bodies."""

from __future__ import annotations

import asyncio
import http.client
import logging
import re
import socket
import sys
import time
from asyncio import Future
from collections.abc import Awaitable
from typing import Any

import orjson
import tornado.ioloop
import tornado.iostream
import tornado.web

import schema

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"

# The default when CORS_ORIGIN is empty: any local development frontend.
LOCAL_ORIGIN = re.compile(r"http://(localhost|127\.0\.0\.1)(:\d{1,5})?")

ALLOWED_HEADERS = "Content-Type, Authorization, X-Requested-With, Range"
EXPOSED_HEADERS = "Content-Range, Content-Length"


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Whether a browser at `origin` may call this service (CORS_ORIGIN, or local by default)."""
    origin = origin.rstrip("/")
    if allowed:
        return "*" in allowed or origin in allowed
    return LOCAL_ORIGIN.fullmatch(origin) is not None


def with_api_prefix(routes: list[tuple]) -> list[tuple]:
    """Each route at its bare path and again under /api/v1 (the contract serves both)."""
    return routes + [(API_PREFIX + route[0], *route[1:]) for route in routes]


class CorsMixin:
    """CORS headers on every answer, and a preflight that answers OPTIONS."""

    def set_default_headers(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin and origin_allowed(origin, self.settings["config"].cors_origin):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Credentials", "true")
            self.set_header("Access-Control-Expose-Headers", EXPOSED_HEADERS)
        self.add_header("Vary", "Origin")

    def options(self, *args: str) -> None:
        self.set_header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
        self.set_header("Access-Control-Allow-Methods", "GET, HEAD, POST, PATCH, DELETE, OPTIONS")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()


class APIHandler(CorsMixin, tornado.web.RequestHandler):
    """Base of every JSON route.

    Errors are answered as `{"statusCode", "error", "message"}`, the shape the frontend reads.
    Raise `tornado.web.HTTPError(status, message)` to stop with a client error: the message is
    shown as is. Anything else becomes a 500 with a generic message, never a stack trace.
    """

    @property
    def db(self):
        return self.settings["db"]

    @property
    def config(self):
        return self.settings["config"]

    def write_json(self, document: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(orjson.dumps(document))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, tornado.web.HTTPError) and error.log_message:
            message = error.log_message % error.args if error.args else error.log_message
        elif status_code >= 500:
            message = "Internal server error"
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(
            orjson.dumps(
                {
                    "statusCode": status_code,
                    "error": http.client.responses.get(status_code, "Error"),
                    "message": message,
                }
            )
        )

    def json_body(self, schema_name: str) -> Any:
        """The request body parsed as JSON and checked against `schema/<schema_name>.json`."""
        body = self.raw_body()
        try:
            document = orjson.loads(body or b"null")
        except orjson.JSONDecodeError as error:
            raise tornado.web.HTTPError(400, "body: not valid JSON (%s)", error) from None
        try:
            schema.validate(schema_name, document)
        except schema.InvalidBody as error:
            raise tornado.web.HTTPError(400, "%s", error) from None
        # JSON can only carry a NUL as the escape \u0000: a quick look at the bytes spares
        # walking large bodies that have none.
        if b"\\u0000" in body:
            path = schema.nul_character_path(document)
            if path is not None:
                raise tornado.web.HTTPError(400, "%s: must not contain NUL characters", path)
        return document

    def raw_body(self) -> bytes:
        """The request body as sent."""
        return self.request.body

    def not_found(self, what: str = "Match") -> tornado.web.HTTPError:
        return tornado.web.HTTPError(404, "%s not found", what)


# Lingering close, as nginx does it. A refusal (413, 415, ...) is often answered while the
# client is still sending its body, and browsers and most HTTP libraries read the answer only
# once they have sent everything. Closing the socket with request bytes unread makes the
# kernel reset the connection, which destroys the answer before the client reads it. So the
# server reads what still comes and drops it (nothing is kept or written to disk), and closes
# once the client has closed, or after LINGER_MAX_BYTES or LINGER_MAX_SECONDS, whichever comes
# first. 64 MiB covers a wrong file picked by mistake (a document, a photo, a song) on a fast
# link; 5 s bounds how long a refused client holds a connection whatever its speed. Past
# either, the connection is closed (and reset) as before: reading more costs more than a
# client left without its answer.
LINGER_MAX_BYTES = 64 * 1024 * 1024
LINGER_MAX_SECONDS = 5.0
LINGER_READ_BYTES = 64 * 1024

# Bodies of JSON routes, unless a route says otherwise.
SMALL_BODY_BYTES = 1024 * 1024

# The lingering connections, referenced until they close (asyncio keeps only weak references
# to its tasks).
_lingering: set[asyncio.Task] = set()


async def linger_and_close(sock: socket.socket, answered: Awaitable[None]) -> None:
    """Once `answered` (the answer is written), reads and drops what the client still sends,
    within the bounds above, then closes `sock`."""
    try:
        async with asyncio.timeout(LINGER_MAX_SECONDS):
            await answered
            sock.shutdown(socket.SHUT_WR)  # the answer is all we send: FIN right after it
            loop = asyncio.get_running_loop()
            buffer = bytearray(LINGER_READ_BYTES)
            drained = 0
            while drained <= LINGER_MAX_BYTES:
                received = await loop.sock_recv_into(sock, buffer)
                if not received:  # the client has read the answer and closed
                    break
                drained += received
    except (OSError, TimeoutError, tornado.iostream.StreamClosedError):
        pass
    finally:
        sock.close()


@tornado.web.stream_request_body
class StreamedBodyHandler(APIHandler):
    """Base of `@stream_request_body` routes that cap their own body size, so that a body
    over the cap is answered 413 with the contract's JSON error. (Tornado's own cap answers a
    plain-text 400, and for a Content-Length over it, after `prepare()` has already answered.)

    Call `receive(limit, refusal)` from `prepare()`: a Content-Length over `limit` is refused
    before the body is read (a client sending `Expect: 100-continue` never sends it); after
    that, `refuse_midway(error)` answers from `data_received`, where an exception would drop
    the connection without an answer. An answer given while the body is still arriving closes
    the connection, lingering (see LINGER_MAX_BYTES) so that the client can read it.
    """

    # True once an answer was given from `data_received` (the client has begun its body).
    _answered_midway = False
    # True from `receive()` until the method starts (`body_received()`): an answer given
    # meanwhile leaves the rest of the body unread.
    receiving = False
    # The next look at whether the body stalled (see `_watch_for_stall`).
    _stall_check: object | None = None

    def receive(self, limit: int, refusal: tornado.web.HTTPError) -> None:
        self.request.connection.set_max_body_size(sys.maxsize)
        self.receiving = True
        declared = self.request.headers.get("Content-Length", "")
        # ASCII digits only (`isdigit` alone takes "²"); more than 18 is over any limit, and
        # more than 4,300 is more than `int()` takes.
        if (declared.isascii() and declared.isdigit()) and (
            len(declared) > 18 or int(declared) > limit
        ):
            raise refusal
        self.body_arriving()
        self._watch_for_stall(self.config.body_idle_seconds)

    def body_arriving(self) -> None:
        """Call from `data_received`: the body is still coming (see BODY_IDLE_SECONDS)."""
        self._last_arrival = time.monotonic()

    def body_received(self) -> None:
        """Call first in the method: the whole body has arrived."""
        self.receiving = False
        self._stop_watching()

    def on_finish(self) -> None:
        self._stop_watching()

    def on_connection_close(self) -> None:
        self._stop_watching()
        super().on_connection_close()

    def _stop_watching(self) -> None:
        # The pending check holds the handler, and with it the body, until it runs.
        if self._stall_check is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self._stall_check)
            self._stall_check = None

    def _watch_for_stall(self, seconds: float) -> None:
        """Closes the connection once the body has not moved for `seconds`: a client that
        stalls mid-body would otherwise hold its connection (and an upload's temp file)
        for as long as it likes. Checked once per period, not re-armed per chunk."""
        loop = tornado.ioloop.IOLoop.current()

        def check() -> None:
            self._stall_check = None
            if not self.receiving or self.request.connection.stream.closed():
                return  # the body came, or the connection is over already
            stalled = time.monotonic() - self._last_arrival
            if stalled < seconds:
                self._stall_check = loop.call_later(seconds - stalled, check)
                return
            log.info(
                "closing a request whose body stalled for %.0f s: %s %s from %s",
                stalled,
                self.request.method,
                self.request.path,
                self.request.remote_ip,
            )
            self.request.connection.close()

        self._stall_check = loop.call_later(seconds, check)

    def refuse_midway(self, error: tornado.web.HTTPError) -> None:
        self._answered_midway = True
        self.send_error(error.status_code, exc_info=(type(error), error, None))

    def finish(self, chunk: Any = None) -> Future[None]:
        if not self.receiving:
            return super().finish(chunk)
        # Tornado closes the connection once this answer is written, rather than read the
        # rest of the body.
        self.set_header("Connection", "close")
        stream = self.request.connection.stream
        if self._client_waits_for_continue() or stream.closed():
            return super().finish(chunk)  # no body is coming: close at once
        # A second descriptor keeps the socket open when Tornado closes its own.
        sock = stream.socket.dup()
        answered = super().finish(chunk)
        task = asyncio.ensure_future(linger_and_close(sock, answered))
        _lingering.add(task)
        task.add_done_callback(_lingering.discard)
        return answered

    def _client_waits_for_continue(self) -> bool:
        """A client that sent `Expect: 100-continue` and was answered before the body (from
        `prepare()`, before Tornado says continue) sends no body."""
        expect = self.request.headers.get("Expect", "").lower()
        return expect == "100-continue" and not self._answered_midway


@tornado.web.stream_request_body
class JsonBodyHandler(StreamedBodyHandler):
    """Base of routes taking a JSON body of a capped size. A subclass defines its method
    (`post`, ...), reading the body with `json_body(schema_name)` (or the bytes with
    `raw_body()`), and may override `max_body_bytes()`.

    A body over the cap is refused with 413, from its Content-Length before it is read, or,
    sent in chunks, as soon as it passes the cap.
    """

    _chunks: list[bytes] | None = None

    def max_body_bytes(self) -> int:
        return SMALL_BODY_BYTES

    def prepare(self) -> None:
        self._limit = self.max_body_bytes()
        self._chunks = []
        self._size = 0
        # A preflight (OPTIONS), or a GET sent to such a route, brings no body to wait for.
        if self.request.method in ("POST", "PUT", "PATCH"):
            self.receive(self._limit, self._too_large())

    def data_received(self, chunk: bytes) -> None:
        if self._chunks is None:  # refused already
            return
        self.body_arriving()
        self._size += len(chunk)
        if self._size > self._limit:
            self._chunks = None
            self.refuse_midway(self._too_large())
        else:
            self._chunks.append(chunk)

    def raw_body(self) -> bytes:
        """The whole body (once the method runs)."""
        self.body_received()
        if self._chunks is not None:
            self.request.body = b"".join(self._chunks)
            self._chunks = None
        return self.request.body

    def _too_large(self) -> tornado.web.HTTPError:
        return tornado.web.HTTPError(413, "body: larger than the %d bytes allowed", self._limit)


class NotFoundHandler(APIHandler):
    """Unknown paths answer a JSON 404 like every other error."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(
            404, "No route for %s %s", self.request.method, self.request.path
        )
