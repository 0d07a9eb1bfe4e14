"""Hands queued analysis runs to the inference engine (the sending side of the outbox).

Every process runs one `Dispatcher`. It claims due jobs with `FOR UPDATE SKIP LOCKED` and a
lease, so two processes never send the same job at once and a job whose sender died is sent
again when the lease runs out. It wakes on Postgres `NOTIFY` from `store.jobs.start_run` and
falls back to a slow poll when no notification comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import UTC, datetime

import aiopg
import orjson
import psycopg2
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from services.config import Config
from services.live import LiveUpdates
from store import jobs
from store import matches as store_matches
from store.db import Database, Row

log = logging.getLogger(__name__)

BATCH = 64
LEASE_MARGIN_SECONDS = 30.0


class Dispatcher:
    def __init__(self, db: Database, live: LiveUpdates, config: Config) -> None:
        self.db = db
        self.live = live
        self.config = config
        self.analyze_url = f"{config.inference_url}/api/v1/analyze"
        self._http = AsyncHTTPClient(force_instance=True, max_clients=BATCH)
        self._wake = asyncio.Event()
        self._sending: dict[str, asyncio.Task] = {}
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._claim_loop()), asyncio.create_task(self._listen())]

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Stops claiming, and gives the jobs still being sent back to the queue."""
        in_flight = dict(self._sending)
        await _cancel_until_done([*self._tasks, *in_flight.values()])
        with contextlib.suppress(psycopg2.Error, OSError):
            async with self.db.connection() as conn:
                await jobs.release(conn, list(in_flight))
        self._http.close()

    async def _claim_loop(self) -> None:
        failing = False
        while True:
            try:
                async with self.db.connection() as conn:
                    claimed = await jobs.claim_due(
                        conn,
                        BATCH - len(self._sending),
                        self.config.dispatch_timeout_seconds + LEASE_MARGIN_SECONDS,
                    )
                    wait = None if claimed else await jobs.seconds_until_next_due(conn)
                failing = False
            except (psycopg2.Error, OSError) as error:
                if not failing:
                    log.warning("dispatcher cannot reach the database: %s", error)
                failing, claimed, wait = True, [], self.config.dispatch_poll_seconds
            for job in claimed:
                self._sending[job["id"]] = asyncio.create_task(self._send(job))
            if claimed and len(self._sending) < BATCH:
                continue
            await self._sleep(wait)

    async def _sleep(self, seconds: float | None) -> None:
        """Until woken, a job falls due, a send slot frees up, or the poll interval passes."""
        timeout = self.config.dispatch_poll_seconds
        if seconds is not None:
            timeout = min(timeout, seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _listen(self) -> None:
        """Wakes the claim loop on every NOTIFY; reconnects with backoff if the link drops."""
        delay = 0.5
        while True:
            try:
                async with aiopg.connect(self.db.dsn, enable_hstore=False) as conn:
                    async with conn.cursor() as cursor:
                        await cursor.execute(f"LISTEN {jobs.CHANNEL}")
                    delay = 0.5
                    self.wake()
                    while True:
                        await conn.notifies.get()
                        self.wake()
            except (psycopg2.Error, OSError) as error:
                log.warning("dispatch notifications lost (%s); polling until reconnected", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.dispatch_poll_seconds)

    async def _send(self, job: Row) -> None:
        try:
            response = await self._http.fetch(
                HTTPRequest(
                    self.analyze_url,
                    method="POST",
                    headers={"Content-Type": "application/json"},
                    body=orjson.dumps(job["payload"]),
                    request_timeout=self.config.dispatch_timeout_seconds,
                ),
                raise_error=False,
            )
            if 200 <= response.code < 300:
                await self._accepted(job)
            else:
                await self._failed_attempt(job, _describe_failure(response))
        except (psycopg2.Error, OSError) as error:
            log.warning("dispatch of match %s interrupted: %s", job["match_id"], error)
        finally:
            self._sending.pop(job["id"], None)
            self.wake()

    async def _accepted(self, job: Row) -> None:
        async with self.db.transaction() as conn:
            if await jobs.finish(conn, job):
                await store_matches.update_run(
                    conn, job["match_id"], job["analysis_id"], "UPLOADED", status="PROCESSING"
                )
        log.info("match %s handed to inference (attempt %d)", job["match_id"], job["attempts"])

    async def _failed_attempt(self, job: Row, reason: str) -> None:
        attempts = job["attempts"]
        elapsed = (datetime.now(UTC) - job["created_at"]).total_seconds()
        delay = (
            self.config.dispatch_backoff_seconds * 2 ** (attempts - 1) * random.uniform(0.8, 1.2)
        )
        if (
            attempts < self.config.dispatch_max_attempts
            and elapsed + delay <= self.config.dispatch_max_seconds
        ):
            async with self.db.connection() as conn:
                await jobs.retry_later(conn, job, delay, reason)
            log.info(
                "match %s not handed over (%s); retry in %.1f s", job["match_id"], reason, delay
            )
            return
        failure = f"{reason}, {attempts} attempt{'s' * (attempts != 1)} over {elapsed:.0f} s"
        async with self.db.transaction() as conn:
            if not await jobs.finish(conn, job):
                return
            failed = await store_matches.update_run(
                conn, job["match_id"], job["analysis_id"], status="FAILED", failure_reason=failure
            )
        log.warning("match %s FAILED: %s", job["match_id"], failure)
        if failed:
            await self.live.publish(
                job["match_id"], "progress", {"matchId": job["match_id"], "progress": -1}
            )


async def _cancel_until_done(tasks: list[asyncio.Task]) -> None:
    """Cancels the tasks and waits for all of them to end.

    One cancel() is not enough on Python 3.11: `asyncio.wait_for` (used by `_sleep` and
    inside aiopg) returns normally when the cancellation arrives just as the awaited future
    completes, and the task carries on. A cancelled send completes the claim loop's wake-up
    wait in exactly that way, so the cancel is repeated until every task has ended.
    """
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)


def _describe_failure(response) -> str:
    if response.code == 599:
        reason = str(response.error)
        if "]" in reason:
            reason = reason.split("]", 1)[1].strip()
        return f"inference engine unreachable at {response.request.url}: {reason.lower()}"
    return f"inference engine at {response.request.url} answered HTTP {response.code}"
