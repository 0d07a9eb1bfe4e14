"""Native WebSocket endpoint for live updates (`/ws`), for clients that do not speak Socket.IO.

The client sends `{"type": "join", "matchId": ..., "since"?: N}` or `{"type": "leave",
"matchId": ...}` (`schema/ws_message.json`). On join the server sends a `snapshot` (status,
progress, stage, as of update `seq`), then the logged updates numbered above `since` (the whole
current run without it), then live updates: `{"type": "progress" | "matchEvent" |
"trackingUpdate" | "complete", "matchId", "seq", ...the update's fields}`. A bad message gets
`{"type": "error", "message"}` and the connection stays open.

Each connection writes one message at a time and queues the rest in its own bounded outbox: a
client that does not read fills only its own outbox and is closed when it overflows.

Updates go out as frames built once per update (`Update.frame`) and sent straight to the socket
while nothing else is being written on it: Tornado's `write_message` frames and buffers each
message per client, which made one update to 1,000 clients cost about 70 ms of CPU. When the
socket cannot take a whole frame, the rest goes through the connection's IOStream, which keeps
the order with everything Tornado itself writes (pings, the close frame).
"""

from __future__ import annotations

import asyncio
import collections
import logging

import orjson
import psycopg2
import tornado.iostream
import tornado.websocket

import schema
from handlers.base import origin_allowed
from services.live import Snapshot, Update, match_key, text_frame

log = logging.getLogger(__name__)

# Messages a connection may have waiting; above the catch-up log's length, so a full replay fits.
OUTBOX_LIMIT = 2000
# Bytes a connection may have waiting: tracking updates can be large. Live updates share one
# frame between all their clients, so this bounds a slow client's own cost.
OUTBOX_BYTES = 64 << 20

# Tornado's own keep-alive: a ping every 20 s; a peer that has not answered one within 20 s is
# dropped (Tornado caps the timeout at the interval).
WEBSOCKET_SETTINGS = {
    "websocket_ping_interval": 20,
    "websocket_ping_timeout": 20,
    "websocket_max_message_size": 64 * 1024,
}

# RFC 6455 7.4.1: 1008, the endpoint received a message that violates its policy.
SLOW_CONSUMER_CLOSE = 1008


class LiveSocket(tornado.websocket.WebSocketHandler):
    def open(self) -> None:
        self.settings["websockets"].add(self)
        self._matches: set[str] = set()
        # Frames waiting while one is being written; None while nothing waits, as on most
        # connections most of the time (an empty deque costs 600 bytes a connection).
        self._outbox: collections.deque[bytes] | None = None
        self._outbox_bytes = 0
        self._writing: asyncio.Future | None = None
        self._closed = False

    @property
    def live(self):
        return self.settings["live"]

    def check_origin(self, origin: str) -> bool:
        return origin_allowed(origin, self.settings["config"].cors_origin)

    async def on_message(self, message: str | bytes) -> None:
        try:
            request = orjson.loads(message)
            schema.validate("ws_message", request)
        except orjson.JSONDecodeError as error:
            self._send_error(f"body: not valid JSON ({error})")
            return
        except schema.InvalidBody as error:
            self._send_error(str(error))
            return
        match_id = match_key(request["matchId"])
        if request["type"] == "join":
            await self._join(match_id, request.get("since"))
        elif match_id in self._matches:
            self._matches.discard(match_id)
            self.live.leave(match_id, self)

    def on_close(self) -> None:
        self.settings["websockets"].discard(self)
        self._forget()

    def _forget(self) -> None:
        """Leave every room and drop what is waiting: nothing more is sent on this connection."""
        self._closed = True
        self._outbox = None
        self._outbox_bytes = 0
        for match_id in self._matches:
            self.live.leave(match_id, self)
        self._matches.clear()

    async def deliver(self, update: Update) -> None:
        self._send(update.frame)

    async def _join(self, match_id: str, since: int | None) -> None:
        try:
            joined = await self.live.join(match_id, self, self._catch_up, since)
        except (psycopg2.Error, OSError, TimeoutError) as error:
            log.warning("A WebSocket client could not join match %s: %s", match_id, error)
            self._send_error("matchId: cannot be joined now (database unavailable)", match_id)
            return
        if not joined:
            self._send_error("matchId: no such match", match_id)
        elif match_id in self._matches or self._closed:
            # Already a member (a rejoin replays, it does not add a second membership), or the
            # connection closed while joining.
            self.live.leave(match_id, self)
        else:
            self._matches.add(match_id)

    async def _catch_up(self, snapshot: Snapshot, updates: list[Update]) -> None:
        self._send(text_frame(orjson.dumps(snapshot.message())))
        for update in updates:
            self._send(update.frame)

    def _send_error(self, message: str, match_id: str | None = None) -> None:
        error = {"type": "error", "message": message}
        if match_id is not None:
            error["matchId"] = match_id
        self._send(text_frame(orjson.dumps(error)))

    def _send(self, frame: bytes) -> None:
        if self._closed:
            return
        if self._writing is None:
            self._write(frame)
        elif self._outbox_has_room(len(frame)):
            if self._outbox is None:
                self._outbox = collections.deque()
            self._outbox.append(frame)
            self._outbox_bytes += len(frame)
        else:
            log.warning("Closing a WebSocket client that does not read: %s", self.request.remote_ip)
            self._forget()
            self.close(SLOW_CONSUMER_CLOSE, "slow consumer")

    def _outbox_has_room(self, size: int) -> bool:
        waiting = len(self._outbox) if self._outbox is not None else 0
        return waiting < self.settings.get(
            "ws_outbox_limit", OUTBOX_LIMIT
        ) and self._outbox_bytes + size <= self.settings.get("ws_outbox_bytes", OUTBOX_BYTES)

    def _write(self, frame: bytes) -> None:
        """Hands one frame to the socket; the next waits until this one reached the socket."""
        stream = self.ws_connection.stream if self.ws_connection is not None else None
        if stream is None or stream.closed():
            self._forget()
            return
        if not stream.writing():
            try:
                sent = stream.socket.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._forget()
                return
            if sent == len(frame):
                return
            frame = frame[sent:]
        try:
            self._writing = stream.write(frame)
        except tornado.iostream.StreamClosedError:
            self._forget()
            return
        self._writing.add_done_callback(self._written)

    def _written(self, writing: asyncio.Future) -> None:
        self._writing = None
        if writing.cancelled() or writing.exception() is not None:
            self._forget()
            return
        # Frames the socket takes whole leave nothing pending: keep going until one waits.
        while self._outbox and self._writing is None:
            frame = self._outbox.popleft()
            self._outbox_bytes -= len(frame)
            self._write(frame)
        if not self._outbox:
            self._outbox = None


routes = [(r"/ws", LiveSocket)]
