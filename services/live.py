"""Live updates of matches: numbered, logged for catch-up, carried by the bus, fanned out.

Every update gets the next number of its match (`seq`) and a row in the catch-up log in one
transaction, then goes on the bus as `{"seq", "event", "data"}`. Each process keeps a room per
watched match holding its local listeners (a native WebSocket client, or the Socket.IO room)
and the last number it handed them. A room hands updates out strictly in number order, each
once: an update arriving ahead of its predecessors (published by another process, or after a
bus outage) first pulls the missing ones from the log, and an update already handed out is
dropped. A listener joining under the room's lock gets the match's state and the logged
updates of the current run, then live updates from exactly where that left off.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import struct
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Protocol

import orjson

from services.bus import LocalBus, RedisBus
from store import live_updates as log_store
from store.db import Database, Row

log = logging.getLogger(__name__)


def text_frame(payload: bytes) -> bytes:
    """A server's WebSocket text frame carrying `payload` (RFC 6455 5.2: final, unmasked,
    uncompressed), so that one update is framed once, not once per client."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


@dataclasses.dataclass(eq=False)
class Update:
    match_id: str
    seq: int
    event: str
    data: dict

    @functools.cached_property
    def frame(self) -> bytes:
        """The update as one native WebSocket frame, built once for all its clients."""
        message = {**self.data, "type": self.event, "matchId": self.match_id, "seq": self.seq}
        return text_frame(orjson.dumps(message))

    @classmethod
    def from_row(cls, match_id: str, row: Row) -> Update:
        return cls(match_id, row["seq"], row["kind"], row["payload"])


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A match's state as of update `seq`."""

    match_id: str
    seq: int
    status: str
    progress: int
    stage: str | None

    def message(self) -> dict:
        return {
            "type": "snapshot",
            "matchId": self.match_id,
            "seq": self.seq,
            "status": self.status,
            "progress": self.progress,
            "stage": self.stage,
        }


class Listener(Protocol):
    """Something in a room: gets the room's updates in order; must not wait on its client."""

    async def deliver(self, update: Update) -> None: ...


CatchUp = Callable[[Snapshot, list[Update]], Awaitable[None]]


@dataclasses.dataclass(eq=False)
class _Room:
    seq: int = 0
    listeners: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    joining: int = 0
    # The match's state and logged updates as of `seq`, read by a join: the joins waiting
    # meanwhile reuse them while the match is still at that number (a wave of reconnecting
    # clients reads the log once, and shares the frames).
    catch_up: tuple[Snapshot, list[Update]] | None = None


def match_key(text: object) -> str | None:
    """The canonical form of a match id (rooms and channels are keyed by it); None if not one."""
    try:
        return str(uuid.UUID(str(text)))
    except ValueError:
        return None


class LiveUpdates:
    """The publish seam for callbacks, and the room registry for this process's clients."""

    def __init__(self, db: Database, bus: LocalBus | RedisBus, log_limit: int = 1000) -> None:
        self._db = db
        self._bus = bus
        self.log_limit = log_limit
        self._rooms: dict[str, _Room] = {}
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self._bus.start(self._received, self._resume)

    async def close(self) -> None:
        await self._bus.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def health(self) -> dict[str, str]:
        return self._bus.health()

    async def publish(self, match_id: str, event_name: str, payload: dict) -> None:
        """Number, log and broadcast one update (call after the change it reports committed).

        Never raises for a bus outage: the update is in the log, and rooms fetch it when the
        bus is back. An update for a deleted match is dropped.
        """
        match_id = match_key(match_id)
        if match_id is None:
            return
        async with self._db.connection() as conn:
            seq = await log_store.record(conn, match_id, event_name, payload, self.log_limit)
        if seq is not None:
            await self.broadcast(match_id, seq, event_name, payload)

    async def broadcast(self, match_id: str, seq: int, event_name: str, payload: dict) -> None:
        """Puts an update already numbered and logged (`seq`) on the bus.

        For a store statement that records its own update (keeping the log to `log_limit`),
        as the progress callback's does, saving `publish`'s extra round trip.
        """
        message = orjson.dumps({"seq": seq, "event": event_name, "data": payload})
        await self._bus.publish(match_key(match_id), message)

    async def join(
        self, match_id: str, listener: Listener, catch_up: CatchUp, since: int | None = None
    ) -> bool:
        """Add `listener` to the match's room; False if there is no such match.

        Before the listener receives anything live, `catch_up(snapshot, updates)` is awaited
        with the match's state and the logged updates numbered above `since` (all of the
        current run's when None). Live updates then continue after `snapshot.seq`.
        """
        room = self._rooms.setdefault(match_id, _Room())
        room.joining += 1
        try:
            # A catch-up read by another join of a wave is reused only while it is as new as
            # the database (the room's own number stands still while the bus is down). Joins
            # that may reuse one read the match's state for that first, side by side outside
            # the lock; a lone join reads state and log together, once.
            shared = room.catch_up is not None or room.joining > 1
            state = await self._read_state(match_id) if shared else None
            async with room.lock:
                cached = room.catch_up
                if cached is None or state is None or not cached[0].seq == state.seq == room.seq:
                    read = await self._read_run(match_id)
                    if read is None:
                        return False
                    # Listeners already in the room get what the read found ahead of them.
                    await self._hand_out(room, read[1])
                    room.seq = max(room.seq, read[0].seq)
                    room.catch_up = cached = read
                    state = read[0]
                logged = cached[1]
                missed = [update for update in logged if since is None or update.seq > since]
                await catch_up(state, missed)
                room.listeners[listener] += 1
                return True
        finally:
            room.joining -= 1
            if not room.joining:
                # Kept no longer than the wave of joins sharing it: a long run's log (tracking
                # frames) is megabytes, parsed and framed.
                room.catch_up = None
            self._forget_if_empty(match_id, room)

    async def _read_state(self, match_id: str) -> Snapshot | None:
        async with self._db.connection() as conn:
            state = await log_store.state(conn, match_id)
        return None if state is None else _snapshot(match_id, state)

    async def _read_run(self, match_id: str) -> tuple[Snapshot, list[Update]] | None:
        """The match's state and every logged update of its current run; None if no match."""
        async with self._db.connection() as conn:
            state = await log_store.state(conn, match_id)
            if state is None:
                return None
            rows = await log_store.since(conn, match_id, 0, upto=state["live_seq"])
        return _snapshot(match_id, state), [Update.from_row(match_id, row) for row in rows]

    def listen(self, match_id: str, listener: Listener) -> None:
        """Add `listener` to the match's room without a catch-up, for a join that cannot read
        the database: it gets live updates from now on, and the logged ones the room pulls
        in order once it can read the log again."""
        self._rooms.setdefault(match_id, _Room()).listeners[listener] += 1

    def leave(self, match_id: str, listener: Listener) -> None:
        """Take one membership of `listener` out of the match's room (no-op if it has none)."""
        room = self._rooms.get(match_id)
        if room is None or listener not in room.listeners:
            return
        room.listeners[listener] -= 1
        if room.listeners[listener] <= 0:
            del room.listeners[listener]
        self._forget_if_empty(match_id, room)

    def _received(self, match_id: str, message: bytes) -> None:
        room = self._rooms.get(match_id)
        if room is None:
            return
        try:
            decoded = orjson.loads(message)
            update = Update(match_id, int(decoded["seq"]), decoded["event"], decoded["data"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("Dropped a malformed live update for match %s", match_id)
            return
        self._spawn(self._deliver(match_id, room, update))

    def _resume(self) -> None:
        for match_id, room in self._rooms.items():
            self._spawn(self._deliver(match_id, room, None))

    async def _deliver(self, match_id: str, room: _Room, update: Update | None) -> None:
        """Hand out `update` after any logged updates the room has not seen (all of them when
        `update` is None); updates the room already handed out are dropped."""
        async with room.lock:
            if update is not None and update.seq <= room.seq:
                return
            pending = [update] if update is not None else []
            if update is None or update.seq > room.seq + 1:
                async with self._db.connection() as conn:
                    rows = await log_store.since(conn, match_id, room.seq)
                logged = [Update.from_row(match_id, row) for row in rows]
                pending = _merge(logged, pending)
            await self._hand_out(room, pending)

    async def _hand_out(self, room: _Room, updates: Iterable[Update]) -> None:
        for update in updates:
            if update.seq <= room.seq:
                continue
            room.seq = update.seq
            room.catch_up = None
            for listener in list(room.listeners):
                if listener in room.listeners:
                    await listener.deliver(update)

    def _forget_if_empty(self, match_id: str, room: _Room) -> None:
        if not room.listeners and not room.joining and self._rooms.get(match_id) is room:
            del self._rooms[match_id]

    def _spawn(self, coroutine: Coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Live update delivery failed", exc_info=task.exception())


def _snapshot(match_id: str, state: Row) -> Snapshot:
    return Snapshot(match_id, state["live_seq"], state["status"], state["progress"], state["stage"])


def _merge(logged: list[Update], pending: list[Update]) -> list[Update]:
    """Logged updates plus the pending one when the log no longer has it, in number order."""
    known = {update.seq for update in logged}
    return sorted([*logged, *(u for u in pending if u.seq not in known)], key=lambda u: u.seq)
