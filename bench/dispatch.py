"""Dispatch throughput and latency with two server processes and an instant inference stub.

    .venv/bin/python -m bench.dispatch [--jobs 5000] [--samples 200]

Starts two `orchestrator.py` processes on one fresh database (on TEST_DATABASE_URL's server,
default 127.0.0.1:5432), both pointed at an engine stub in this process that answers 202 at
once and notes when each job arrives. Then measures:
- throughput: `--jobs` matches and their jobs committed in one transaction; jobs per second
  from that commit to the last job's arrival (target: 500/s or more);
- latency with idle dispatchers: one match at a time, from just before its transaction
  commits to its job's arrival, p50 and p99 (target: p99 under 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import orjson
from sqlalchemy import func, select

from bench.server import free_port, fresh_database, server_process
from store import jobs
from store import matches as store_matches
from store.db import Database
from store.tables import dispatch_jobs


class Arrivals:
    """When each match's job reached the engine stub (`time.perf_counter()`)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._changed = asyncio.Event()

    def note(self, match_id: str) -> None:
        self.times[match_id] = time.perf_counter()
        self._changed.set()

    async def wait_for(self, done) -> None:
        while not done():
            self._changed.clear()
            await self._changed.wait()


class EngineStub(asyncio.Protocol):
    """A minimal HTTP/1.1 server for `POST /api/v1/analyze`: 202 at once, arrival noted."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            self.arrivals.note(orjson.loads(body)["match_id"])
            self.transport.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")


async def queue_length(db: Database) -> int:
    return await db.fetch_value(select(func.count()).select_from(dispatch_jobs))


async def create_match(conn, number: int) -> str:
    """A match and its job, as URL intake writes them (call inside a transaction)."""
    match = await store_matches.insert_match(conn, upload_url=f"https://videos.example/{number}")
    await jobs.start_run(conn, match["id"], {"video_url": match["upload_url"]})
    return match["id"]


async def throughput(db: Database, arrivals: Arrivals, count: int) -> None:
    async with db.transaction() as conn:
        for number in range(count):
            await create_match(conn, number)
        committing = time.perf_counter()
    await arrivals.wait_for(lambda: len(arrivals.times) >= count)
    last = max(arrivals.times.values())
    while await queue_length(db):
        await asyncio.sleep(0.01)
    emptied = time.perf_counter()
    print(
        f"throughput: {count} jobs in {last - committing:.2f} s = "
        f"{count / (last - committing):.0f} jobs/s (outbox empty after "
        f"{emptied - committing:.2f} s)"
    )


async def latency(db: Database, arrivals: Arrivals, samples: int) -> None:
    delays = []
    for number in range(samples):
        async with db.transaction() as conn:
            match_id = await create_match(conn, number)
            committing = time.perf_counter()
        await arrivals.wait_for(lambda match_id=match_id: match_id in arrivals.times)
        delays.append((arrivals.times[match_id] - committing) * 1000)
        # Let the dispatcher finish the job and go idle before the next one.
        while await queue_length(db):
            await asyncio.sleep(0.005)
    percentiles = statistics.quantiles(delays, n=100)
    print(
        f"latency (idle dispatchers, {samples} matches): p50 {percentiles[49]:.1f} ms, "
        f"p99 {percentiles[98]:.1f} ms, max {max(delays):.1f} ms"
    )


async def main(count: int, samples: int) -> None:
    port = free_port()
    arrivals = Arrivals()
    stub = await asyncio.get_running_loop().create_server(
        lambda: EngineStub(arrivals), "127.0.0.1", port
    )
    engine = {"INFERENCE_URL": f"http://127.0.0.1:{port}", "DISPATCH_MAX_ATTEMPTS": "5"}
    with fresh_database() as database_url:
        async with (
            server_process(database_url, **engine),
            server_process(database_url, **engine),
        ):
            db = await Database.connect(database_url, size=2)
            try:
                await throughput(db, arrivals, count)
                await latency(db, arrivals, samples)
            finally:
                await db.close()
    stub.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs for the throughput run")
    parser.add_argument("--samples", type=int, default=200, help="matches for the latency run")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.samples))
