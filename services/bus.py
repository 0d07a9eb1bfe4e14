"""The live-update bus: carries encoded updates to every orchestrator process.

Both buses have one interface:

- `start(on_message, on_resume)`: `on_message(match_id, message)` is called for every message
  published by any process (this one included); it must not block. `on_resume()` is called
  each time the bus comes back after an outage, so listeners can fetch what they missed.
- `publish(match_id, message)`: never raises, and never waits long on the bus.
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
from redis.exceptions import ConnectionError as RedisConnectionError
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

    A background task owns the subscription and with it the bus's health. It marks the bus
    down (logged once) when Redis goes away, and also when a publish fails or a ping goes
    unanswered for two heartbeats (a Redis that hangs, a network that drops packets); it then
    reconnects with capped exponential backoff and jitter, and marks the bus up again (logged
    once) when the subscription is back.

    A publish waits at most `PUBLISH_SECONDS`, so a callback never waits long on Redis. While
    the bus is down the newest message of each match is kept, and sent when it is back: other
    processes' rooms, seeing a number ahead of theirs, fetch whatever they missed from the
    catch-up log.
    """

    # The longest a publish may hold up the callback that makes it.
    PUBLISH_SECONDS = 1.0
    # How long a new subscription may take to be confirmed.
    CONFIRM_SECONDS = 2.0
    # Matches whose newest unsent message is kept while Redis is down.
    UNSENT_LIMIT = 10_000

    def __init__(
        self,
        url: str,
        *,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        heartbeat: float = 5.0,
    ) -> None:
        connection = dict(socket_connect_timeout=2, socket_timeout=2, socket_keepalive=True)
        # One immediate retry, on a fresh connection: a pooled connection may have died with
        # an earlier Redis.
        self._publisher = redis.asyncio.Redis.from_url(
            url, retry=Retry(NoBackoff(), 1), **connection
        )
        # No retries: redis-py would reconnect and resubscribe by itself, and the updates
        # published meanwhile would not be fetched (`on_resume` is called by this class).
        self._subscriber = redis.asyncio.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0), **connection
        )
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._heartbeat = heartbeat
        self._up = False
        self._outage_logged = False
        self._broken = asyncio.Event()
        self._unsent: dict[str, bytes] = {}
        self._task: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    async def start(self, on_message: OnMessage, on_resume: OnResume) -> None:
        """Start the subscription task; waits briefly for the first subscription, not forever."""
        self._task = asyncio.create_task(self._subscribe_forever(on_message, on_resume))
        self._task.add_done_callback(self._subscription_ended)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=2)

    async def publish(self, match_id: str, message: bytes) -> None:
        if self._up:
            try:
                async with asyncio.timeout(self.PUBLISH_SECONDS):
                    await self._publisher.publish(CHANNEL_PREFIX + match_id, message)
                return
            except (RedisError, OSError, TimeoutError) as error:
                self._went_down(error)
        self._keep_unsent(match_id, message)

    def health(self) -> dict[str, str]:
        return {"redis": "up" if self._up else "down"}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._subscriber.aclose()
        await self._publisher.aclose()

    async def _subscribe_forever(self, on_message: OnMessage, on_resume: OnResume) -> None:
        delay = self._min_backoff
        while True:
            try:
                async with self._subscriber.pubsub() as pubsub:
                    await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                    # Up only once Redis confirmed: a hung Redis may still accept connections.
                    if await pubsub.get_message(timeout=self.CONFIRM_SECONDS) is None:
                        raise RedisConnectionError("Redis did not confirm the subscription")
                    self._came_up()
                    self._subscribed.set()
                    on_resume()
                    await self._send_unsent()
                    delay = self._min_backoff
                    await self._listen(pubsub, on_message)
            except (RedisError, OSError, TimeoutError) as error:
                self._went_down(error)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._max_backoff)

    async def _listen(self, pubsub: redis.asyncio.client.PubSub, on_message: OnMessage) -> None:
        """Hands messages over until the subscription breaks (raises) or a publish failed
        (returns). After a heartbeat of silence it pings; a second one without an answer
        means the connection is dead even if the socket does not say so."""
        broken = asyncio.ensure_future(self._broken.wait())
        reading: asyncio.Future | None = None
        pinged = False
        try:
            while True:
                reading = asyncio.ensure_future(pubsub.get_message(timeout=self._heartbeat))
                await asyncio.wait({reading, broken}, return_when=asyncio.FIRST_COMPLETED)
                if broken.done():
                    return  # the read is cancelled below; the connection goes with it
                message = reading.result()
                if message is None:
                    if pinged:
                        raise RedisConnectionError("Redis did not answer a ping")
                    await pubsub.ping()
                    pinged = True
                    continue
                pinged = False
                if message["type"] == "pmessage":
                    channel = message["channel"].decode()
                    on_message(channel.removeprefix(CHANNEL_PREFIX), message["data"])
        finally:
            # Also when the bus closes: a read left behind would fail on the closed
            # connection with nobody to hear it.
            broken.cancel()
            if reading is not None:
                reading.cancel()

    def _keep_unsent(self, match_id: str, message: bytes) -> None:
        """Keeps the newest message of the match (one is enough: it carries the number)."""
        self._unsent.pop(match_id, None)
        if len(self._unsent) >= self.UNSENT_LIMIT:
            del self._unsent[next(iter(self._unsent))]
        self._unsent[match_id] = message

    async def _send_unsent(self) -> None:
        while self._unsent and self._up:
            match_id = next(iter(self._unsent))
            await self.publish(match_id, self._unsent.pop(match_id))

    def _went_down(self, error: BaseException) -> None:
        self._up = False
        self._broken.set()
        if not self._outage_logged:
            self._outage_logged = True
            log.warning(
                "Redis unavailable, live push paused until it is back: %s",
                str(error) or type(error).__name__,
            )

    def _came_up(self) -> None:
        self._broken.clear()
        self._up = True
        if self._outage_logged:
            self._outage_logged = False
            log.info("Redis is back, live push resumed")

    def _subscription_ended(self, task: asyncio.Task) -> None:
        self._up = False
        if not task.cancelled() and task.exception() is not None:
            log.error("The live bus stopped: live push is off", exc_info=task.exception())


def make_bus(redis_url: str) -> LocalBus | RedisBus:
    return RedisBus(redis_url) if redis_url else LocalBus()
