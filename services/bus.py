"""The live-update bus: carries encoded updates to every orchestrator process.

Both buses have one interface:

- `start(on_message, on_resume)`: `on_message(match_id, message)` is called for every message
  published by any process (this one included); it must not block. `on_resume()` is called
  each time the bus comes back after an outage, so listeners can fetch what they missed.
- `publish(match_id, message)`: never raises; while the bus is down the message is dropped.
- `health()`: a small dict for `/health`. `close()`.

`make_bus(redis_url)` picks `RedisBus` when a URL is configured, else `LocalBus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

OnMessage = Callable[[str, bytes], None]
OnResume = Callable[[], None]

CHANNEL_PREFIX = "matcha:match:"


class LocalBus:
    """In-process bus for a single orchestrator process (no `REDIS_URL`)."""

    def __init__(self) -> None:
        self._on_message: OnMessage | None = None

    async def start(self, on_message: OnMessage, on_resume: OnResume) -> None:
        self._on_message = on_message

    async def publish(self, match_id: str, message: bytes) -> None:
        if self._on_message is not None:
            self._on_message(match_id, message)

    def health(self) -> dict[str, str]:
        return {"redis": "disabled"}

    async def close(self) -> None:
        self._on_message = None


class RedisBus:
    """One Redis channel per match; one pattern subscription per process on its own connection.

    A background task owns the subscription and with it the bus's health: when Redis goes away
    it marks the bus down (logged once), retries with capped exponential backoff and jitter,
    and marks it up again (logged once) when the subscription is back. Publishing while down is
    a no-op: the update is already in the catch-up log, and `on_resume` lets listeners fetch it.
    """

    def __init__(self, url: str, *, min_backoff: float = 0.1, max_backoff: float = 5.0) -> None:
        # One immediate retry, on a fresh connection: a pooled connection may have died with an
        # earlier Redis. Beyond that the subscription task owns reconnecting, so a callback
        # never waits on a dead Redis.
        self._client = redis.asyncio.Redis.from_url(
            url,
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=2,
            socket_timeout=2,
            socket_keepalive=True,
        )
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._up = False
        self._outage_logged = False
        self._task: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    async def start(self, on_message: OnMessage, on_resume: OnResume) -> None:
        """Start the subscription task; waits briefly for the first subscription, not forever."""
        self._task = asyncio.create_task(self._subscribe_forever(on_message, on_resume))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=2)

    async def publish(self, match_id: str, message: bytes) -> None:
        if not self._up:
            return
        try:
            await self._client.publish(CHANNEL_PREFIX + match_id, message)
        except (RedisError, OSError) as error:
            self._log_outage(error)

    def health(self) -> dict[str, str]:
        return {"redis": "up" if self._up else "down"}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def _subscribe_forever(self, on_message: OnMessage, on_resume: OnResume) -> None:
        delay = self._min_backoff
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                    self._came_up()
                    self._subscribed.set()
                    on_resume()
                    delay = self._min_backoff
                    async for message in pubsub.listen():
                        if message["type"] == "pmessage":
                            channel = message["channel"].decode()
                            on_message(channel.removeprefix(CHANNEL_PREFIX), message["data"])
            except (RedisError, OSError) as error:
                self._up = False
                self._log_outage(error)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._max_backoff)

    def _log_outage(self, error: BaseException) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            log.warning("Redis unavailable, live push paused until it is back: %s", error)

    def _came_up(self) -> None:
        self._up = True
        if self._outage_logged:
            self._outage_logged = False
            log.info("Redis is back, live push resumed")


def make_bus(redis_url: str) -> LocalBus | RedisBus:
    return RedisBus(redis_url) if redis_url else LocalBus()
