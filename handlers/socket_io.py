"""Socket.IO endpoint at `/socket.io/` for the existing frontend (python-socketio, Tornado mode).

The client emits `joinMatch` with a match id; it is answered with the event `joined` (and the
ack `{"event": "joined", "data": id}` when asked for), then the match's `snapshot` and the
logged updates of its current run, then live `progress`, `matchEvent`, `trackingUpdate` and
`complete` events, emitted to the match's room. Both transports work (websocket, and
long-polling with upgrade); browsers' origins are checked against CORS_ORIGIN.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg2
import socketio
import tornado.iostream
import tornado.websocket

from handlers.base import origin_allowed
from handlers.live import OUTBOX_BYTES, SLOW_CONSUMER_CLOSE
from services.live import LiveUpdates, Snapshot, Update, match_key

log = logging.getLogger(__name__)

NAMESPACE = "/"
SHUTTING_DOWN = "shutting down: connect again"


class SocketIOEndpoint:
    """The Socket.IO server, and its one listener in each watched match's live room."""

    def __init__(self, live: LiveUpdates, cors_origin: tuple[str, ...]) -> None:
        self.live = live
        # python-socketio runs each event in a task of its own: a client's joins, leaves and
        # disconnect take turns on its lock, so that they apply in the order it sent them.
        self._turns: dict[str, asyncio.Lock] = {}
        self.server = socketio.AsyncServer(
            async_mode="tornado",
            cors_allowed_origins=lambda origin: (
                bool(origin) and origin_allowed(origin, cors_origin)
            ),
        )
        self.server.on("joinMatch", self.join_match)
        self.server.on("leaveMatch", self.leave_match)
        self.server.on("disconnect", self.disconnected)
        # Set once shutdown has begun: new Engine.IO requests are refused from then on.
        self.closing = False
        endpoint = self

        class Handler(socketio.get_tornado_handler(self.server)):
            def prepare(self) -> None:
                # A client reconnecting over a kept-alive connection would otherwise open a
                # session whose polls hold the shutdown's drain up; it retries elsewhere.
                if endpoint.closing:
                    self.set_status(503)
                    self.finish(
                        {
                            "statusCode": 503,
                            "error": "Service Unavailable",
                            "message": SHUTTING_DOWN,
                        }
                    )

            def check_origin(self, origin: str) -> bool:
                # The engine.io handler cannot test a callable against the origin itself.
                return origin_allowed(origin, cors_origin)

            async def open(self, *args, **kwargs) -> None:
                # A WebSocket transport: shutdown closes it with 1001, so the client reconnects
                # (an engine.io "disconnect" would tell socket.io-client not to).
                self.settings["websockets"].add(self)
                # engine.io queues without bound; a client that does not read is closed once
                # this much waits for it, as on the native endpoint.
                self.ws_connection.stream.max_write_buffer_size = self.settings.get(
                    "ws_outbox_bytes", OUTBOX_BYTES
                )
                await super().open(*args, **kwargs)

            def write_message(self, message, binary=False):
                try:
                    writing = super().write_message(message, binary)
                except tornado.iostream.StreamBufferFullError:
                    log.warning(
                        "Closing a Socket.IO client that does not read: %s", self.request.remote_ip
                    )
                    # Room for the close frame, which the full buffer would refuse too.
                    self.ws_connection.stream.max_write_buffer_size = None
                    self.close(SLOW_CONSUMER_CLOSE, "slow consumer")
                    raise tornado.websocket.WebSocketClosedError() from None
                # engine.io never awaits the write: a connection closed under it would log
                # a "never retrieved" traceback per queued message.
                writing.add_done_callback(_retrieve)
                return writing

            def on_close(self) -> None:
                self.settings["websockets"].discard(self)
                super().on_close()

        self.routes = [(r"/socket.io/", Handler)]

    async def end_polling_sessions(self) -> None:
        """Refuses new sessions, and ends the long-polling ones with an Engine.IO "close".

        For shutdown: their pending polls return at once instead of counting as requests in
        flight until the grace runs out, and socket.io-client reconnects after a "close" (to
        another process), as after the 1001 that closes the WebSocket ones. Those are left
        to that 1001: a Socket.IO disconnect would tell the client not to reconnect.
        """
        self.closing = True
        polling = [
            session
            for session in list(self.server.eio.sockets.values())
            if not (session.upgraded or session.upgrading)
        ]
        # Without waiting for the client to fetch the "close": a pending poll takes it at
        # once, and a client between polls has its next poll refused (503), which it also
        # takes for a lost connection.
        await asyncio.gather(*(session.close(wait=False) for session in polling))

    async def close(self) -> None:
        """Stops the server's background tasks (call before the HTTP server stops)."""
        await self.server.shutdown()

    async def deliver(self, update: Update) -> None:
        await self.server.emit(update.event, update.data, room=update.match_id)

    async def join_match(self, sid: str, match_id: object = None, *_: object) -> dict:
        """Any number of arguments is answered: the first is the match id, if any."""
        async with self._turn(sid):
            await self._join(sid, match_id)
        return {"event": "joined", "data": match_id}

    async def _join(self, sid: str, match_id: object) -> None:
        key = match_key(match_id)
        entered = False

        async def catch_up(snapshot: Snapshot, updates: list[Update]) -> None:
            nonlocal entered
            await self.server.emit("joined", match_id, to=sid)
            if not self._connected(sid) or key in self.server.rooms(sid):
                return
            await self.server.enter_room(sid, key)
            entered = True
            await self.server.emit("snapshot", snapshot.message(), to=sid)
            for update in updates:
                await self.server.emit(update.event, update.data, to=sid)

        try:
            joined = key is not None and await self.live.join(key, self, catch_up)
        except (psycopg2.Error, OSError, TimeoutError) as error:
            # Still joined, as the frontend never asks again: live updates reach the client
            # from now on, and what it missed once the room can read the log again.
            log.warning("A Socket.IO client joined match %s without catch-up: %s", key, error)
            await self.server.emit("joined", match_id, to=sid)
            if self._connected(sid) and key not in self.server.rooms(sid):
                await self.server.enter_room(sid, key)
                self.live.listen(key, self)
            return
        if not joined:
            # The old service let any id join its room; an unknown match just never updates.
            await self.server.emit("joined", match_id, to=sid)
        elif not entered:
            # Already in the room, or gone while joining: one membership per client and match.
            self.live.leave(key, self)

    async def leave_match(self, sid: str, match_id: object = None, *_: object) -> None:
        key = match_key(match_id)
        async with self._turn(sid):
            if key is not None and key in self.server.rooms(sid):
                await self.server.leave_room(sid, key)
                self.live.leave(key, self)

    async def disconnected(self, sid: str, reason: str) -> None:
        # Taken out first: an event of this client's that starts later finds it gone.
        async with self._turns.pop(sid, None) or asyncio.Lock():
            for room in self.server.rooms(sid):
                if room != sid:
                    self.live.leave(room, self)

    def _turn(self, sid: str) -> asyncio.Lock:
        """The client's lock; a client already gone has no turns left to keep in order."""
        if not self._connected(sid):
            return asyncio.Lock()
        return self._turns.setdefault(sid, asyncio.Lock())

    def _connected(self, sid: str) -> bool:
        return self.server.manager.is_connected(sid, NAMESPACE)


def _retrieve(writing: asyncio.Future) -> None:
    if not writing.cancelled():
        writing.exception()
