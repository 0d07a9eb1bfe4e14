"""Hands queued analysis runs to the inference engine (the sending side of the outbox).

Every process runs one `Dispatcher`. It claims due jobs with `FOR UPDATE SKIP LOCKED` and a
lease, so two processes never send the same job at once and a job whose sender died is sent
again when the lease runs out. It wakes on Postgres `NOTIFY` from `store.jobs.start_run` and
falls back to a slow poll when no notification comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import time

import aiohttp
import aiopg
import orjson
import psycopg2

from services import faults
from services.config import Config
from services.live import LiveUpdates
from store import jobs
from store.db import CONNECT_TIMEOUT, Database, Row

log = logging.getLogger(__name__)

# Most jobs one process sends at the same time (and claims in one statement).
BATCH = 64
JSON = {"Content-Type": "application/json"}
# Client errors that mean "not now" rather than "not this job": retried, like a 5xx.
RETRIED_4XX = frozenset({408, 425, 429})


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why an attempt failed, for people; `final` when sending the job again cannot help."""

    reason: str
    final: bool = False
    # No answer in time: the engine may have taken the job all the same.
    unanswered: bool = False


class Dispatcher:
    def __init__(self, db: Database, live: LiveUpdates, config: Config) -> None:
        self.db = db
        self.live = live
        self.config = config
        self.analyze_url = f"{config.inference_url}/api/v1/analyze"
        self._http: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._sending: dict[str, tuple[Row, asyncio.Task]] = {}
        self._tasks: list[asyncio.Task] = []
        # Checked by the loops as well as cancelling them: aiopg (on Python 3.11) can swallow
        # a cancellation that arrives just as its query completes.
        self._stopping = False

    async def start(self) -> None:
        # Connections to the engine are kept open and reused (one per concurrent send).
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=BATCH),
            timeout=aiohttp.ClientTimeout(total=self.config.dispatch_timeout_seconds),
        )
        self._tasks = [asyncio.create_task(self._claim_loop()), asyncio.create_task(self._listen())]

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float = 0.0) -> None:
        """Stops claiming; sends under way get `grace` seconds, the rest go back to the queue.

        Safe to call again: a stopped dispatcher has nothing left to stop.
        """
        self._stopping = True
        self.wake()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        sending = list(self._sending.values())
        if sending and grace > 0:
            await asyncio.wait([task for _, task in sending], timeout=grace)
        unsent = [(job, task) for job, task in sending if not task.done()]
        for _, task in unsent:
            task.cancel()
        await asyncio.gather(*(task for _, task in unsent), return_exceptions=True)
        if unsent:
            with contextlib.suppress(psycopg2.Error, OSError):
                async with self.db.connection() as conn:
                    await jobs.release(conn, [job for job, _ in unsent])
            log.info("gave %d unsent job(s) back to the queue", len(unsent))
        if self._http is not None:
            await self._http.close()

    async def _claim_loop(self) -> None:
        failing = False
        while not self._stopping:
            wait = self.config.dispatch_poll_seconds
            free = BATCH - len(self._sending)
            if free > 0:
                try:
                    next_due = await self._claim_and_send(free)
                    failing = False
                except (psycopg2.Error, OSError) as error:
                    if not failing:
                        log.warning("dispatcher cannot reach the database: %s", error)
                    failing, next_due = True, None
                if next_due is not None:
                    wait = min(wait, next_due)
            # With every slot busy, a finishing send wakes the loop.
            await self._sleep(wait)

    async def _claim_and_send(self, free: int) -> float | None:
        """Claims up to `free` due jobs and starts sending them.

        When fewer were due, returns how long until the next one is (None if none wait).
        """
        async with self.db.connection() as conn:
            claimed = await jobs.claim_due(conn, free, self.config.dispatch_lease_seconds)
            for job in claimed:
                self._sending[job["id"]] = (job, asyncio.create_task(self._send(job)))
            if len(claimed) == free:
                return None
            return await jobs.seconds_until_next_due(conn)

    async def _sleep(self, seconds: float) -> None:
        """Until woken, or `seconds` pass."""
        if not self._wake.is_set() and seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._wake.wait()
        self._wake.clear()

    async def _listen(self) -> None:
        """Wakes the claim loop on every NOTIFY; reconnects with backoff if the link drops."""
        delay = 0.5
        while not self._stopping:
            try:
                async with aiopg.connect(
                    self.db.dsn, timeout=CONNECT_TIMEOUT, enable_hstore=False, enable_uuid=False
                ) as conn:
                    async with conn.cursor() as cursor:
                        await cursor.execute(f"LISTEN {jobs.CHANNEL}")
                    delay = 0.5
                    self.wake()
                    while not self._stopping:
                        await conn.notifies.get()
                        self.wake()
            except (psycopg2.Error, OSError) as error:
                log.warning("dispatch notifications lost (%s); polling until reconnected", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.dispatch_poll_seconds)

    async def _send(self, job: Row) -> None:
        faults.crash_point("before-send")
        started = time.monotonic()
        try:
            failure = await self._post(job)
            if failure is None:
                async with self.db.connection() as conn:
                    await jobs.finish_accepted(conn, job)
                log.info(
                    "match %s handed to inference (attempt %d)", job["match_id"], job["attempts"]
                )
            elif failure.final:
                await self._give_up(job, failure.reason)
            else:
                # Up to the claim by the database's clock, then by this process's monotonic one.
                elapsed = job["elapsed"] + time.monotonic() - started
                await self._failed_attempt(job, failure, elapsed)
        except (psycopg2.Error, OSError) as error:
            # The job stays claimed: it is sent again when the lease runs out.
            log.warning("dispatch of match %s interrupted: %s", job["match_id"], error)
        finally:
            self._sending.pop(job["id"], None)
            self.wake()

    async def _post(self, job: Row) -> Failure | None:
        """Sends the job; None when the engine accepted it, else why not."""
        try:
            async with self._http.post(
                self.analyze_url, data=orjson.dumps(job["payload"]), headers=JSON
            ) as response:
                await response.read()  # so that the connection can be reused
        except TimeoutError:
            return Failure(
                f"inference engine unreachable at {self.analyze_url}: no answer within "
                f"{_seconds(self.config.dispatch_timeout_seconds)}",
                unanswered=True,
            )
        except OSError as error:
            reason = (os.strerror(error.errno) if error.errno else str(error)).lower()
        except aiohttp.ClientError as error:
            reason = (str(error) or type(error).__name__).lower()
        else:
            status = response.status
            if 200 <= status < 300:
                return None
            if 400 <= status < 500 and status not in RETRIED_4XX:
                return Failure(
                    f"inference engine at {self.analyze_url}: refused the job with HTTP {status}",
                    final=True,
                )
            return Failure(f"inference engine at {self.analyze_url} answered HTTP {status}")
        return Failure(f"inference engine unreachable at {self.analyze_url}: {reason}")

    async def _failed_attempt(self, job: Row, failure: Failure, elapsed: float) -> None:
        """Retries later, unless that would pass DISPATCH_MAX_ATTEMPTS or DISPATCH_MAX_SECONDS
        (counted from the job's first attempt)."""
        attempts = job["attempts"]
        delay = (
            self.config.dispatch_backoff_seconds * 2 ** (attempts - 1) * random.uniform(0.8, 1.2)
        )
        if (
            attempts < self.config.dispatch_max_attempts
            and elapsed + delay <= self.config.dispatch_max_seconds
        ):
            async with self.db.connection() as conn:
                await jobs.retry_later(
                    conn, job, delay, failure.reason, unanswered=failure.unanswered
                )
            log.info(
                "match %s not handed over (%s); retry in %.1f s",
                job["match_id"],
                failure.reason,
                delay,
            )
            return
        attempts_text = f"{attempts} attempt{'s' * (attempts != 1)}"
        await self._give_up(job, f"{failure.reason}, {attempts_text} over {_seconds(elapsed)}")

    async def _give_up(self, job: Row, failure: str) -> None:
        """Marks the run FAILED, unless it is no longer current or its job no longer ours (a
        callback showed that the engine has it)."""
        async with self.db.connection() as conn:
            failed = await jobs.finish_failed(conn, job, failure)
        if failed:
            match_id = job["match_id"]
            log.warning("match %s FAILED: %s", match_id, failure)
            await self.live.publish(match_id, "progress", {"matchId": match_id, "progress": -1})


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
