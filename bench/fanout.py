"""Live fan-out: callback-to-client latency, memory per idle connection, sustainable rate.

    .venv/bin/python -m bench.fanout [--clients 1000] [--processes 4] [--redis redis://127.0.0.1:6379/0]

Starts one `orchestrator.py` process (in-process bus, or Redis with --redis) on a fresh
database, connects native WebSocket clients from this process over loopback, and measures:
- 1,000 clients on one match: latency from sending a `progress` callback to each client
  receiving it (p50, p99; target p99 under 50 ms), and the server's CPU time per update
  (the clients share this machine's cores: the latency includes their own reading);
- the server's memory per idle joined connection (RSS growth / clients; target under 20 KB);
- 1,000 matches with one client each: latency at rising callback rates, and the highest rate
  whose p99 stays under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection

import aiohttp
import orjson
import psutil

from bench.server import fresh_database, server_process

TARGET_P99_MS = 50.0
RATES = (100, 200, 400, 800, 1200, 1600)
STEP_SECONDS = 3.0


class Watchers:
    """WebSocket clients, spread over worker processes, that timestamp the tagged updates.

    One Python process reading 1,000 sockets spends longer per update than the server does
    sending it; spread over processes, the clients measure the server, not themselves.
    `time.monotonic()` is one clock for every process of the machine.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.sent: dict[str, float] = {}
        self.chunks: list[list[str]] = []
        self._workers: list[tuple[multiprocessing.Process, Connection]] = []
        self._owner: dict[str, int] = {}

    async def open(self, base: str, match_ids: list[str]) -> None:
        context = multiprocessing.get_context("spawn")
        url = base.replace("http://", "ws://") + "/ws"
        for index in range(self.processes):
            chunk = match_ids[index :: self.processes]
            self.chunks.append(chunk)
            for match_id in chunk:
                self._owner[match_id] = index
            ours, theirs = context.Pipe()
            worker = context.Process(target=_watch, args=(url, chunk, theirs), daemon=True)
            worker.start()
            self._workers.append((worker, ours))
        for _, pipe in self._workers:
            assert await asyncio.to_thread(pipe.recv) == "ready"

    def sending(self, match_id: str, tag: str) -> None:
        self.sent[tag] = time.monotonic()

    async def latencies(self, expected: dict[int, int], timeout: float = 30.0) -> list[float]:
        """Waits until each worker has `expected[worker]` updates (or the timeout); returns
        their latencies in ms and starts the workers' records afresh."""
        for index, (_, pipe) in enumerate(self._workers):
            pipe.send((expected.get(index, 0), timeout))
        received = []
        for _, pipe in self._workers:
            received += await asyncio.to_thread(pipe.recv)
        return [(at - self.sent[tag]) * 1000 for tag, at in received if tag in self.sent]

    def expected(self, targets: list[str]) -> dict[int, int]:
        """How many updates each worker gets for callbacks on `targets` (one client a match)."""
        return dict(collections.Counter(self._owner[match_id] for match_id in targets))

    def close(self) -> None:
        for worker, pipe in self._workers:
            pipe.send(None)
            worker.join(10)


def _watch(url: str, match_ids: list[str], pipe: Connection) -> None:
    """A worker process: joins `match_ids` (one socket each) and timestamps tagged updates."""
    asyncio.run(_watch_async(url, match_ids, pipe))


async def _watch_async(url: str, match_ids: list[str], pipe: Connection) -> None:
    arrivals: list[tuple[str, float]] = []
    enough = asyncio.Event()
    wanted = 0

    async def read(ws) -> None:
        async for message in ws:
            tag = orjson.loads(message.data).get("stage")
            if tag is not None:
                arrivals.append((tag, time.monotonic()))
                if len(arrivals) >= wanted:
                    enough.set()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def join(match_id: str):
            ws = await session.ws_connect(url, max_msg_size=0)
            await ws.send_json({"type": "join", "matchId": match_id})
            assert orjson.loads((await ws.receive()).data)["type"] == "snapshot"
            return ws

        sockets = []
        for start in range(0, len(match_ids), 100):
            sockets += await asyncio.gather(*(join(m) for m in match_ids[start : start + 100]))
        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        pipe.send("ready")
        while (request := await asyncio.to_thread(pipe.recv)) is not None:
            wanted, timeout = request
            if len(arrivals) < wanted:
                enough.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(enough.wait(), timeout)
            pipe.send(arrivals)
            arrivals = []
        for task in readers:
            task.cancel()


async def create_matches(session, base: str, count: int) -> list[str]:
    async def one(_: int) -> str:
        async with session.post(base + "/matches/youtube", json={"url": "https://v.test/m"}) as r:
            return (await r.json())["id"]

    ids = []
    for start in range(0, count, 50):
        ids += await asyncio.gather(*(one(n) for n in range(start, min(count, start + 50))))
    return ids


async def send_progress(session, base: str, watchers: Watchers, match_id: str, tag: str) -> None:
    watchers.sending(match_id, tag)
    async with session.post(
        f"{base}/matches/{match_id}/progress", json={"progress": 50, "stage": tag}
    ) as response:
        response.raise_for_status()


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def one_match(
    session, base: str, pid: int, clients: int, updates: int, interval: float, processes: int
) -> None:
    (match_id,) = await create_matches(session, base, 1)
    server = psutil.Process(pid)
    before = server.memory_info().rss
    watchers = Watchers(processes)
    await watchers.open(base, [match_id] * clients)
    await asyncio.sleep(1)  # let the server finish its allocations before reading RSS
    per_connection = (server.memory_info().rss - before) / clients
    cpu_before = sum(server.cpu_times()[:2])
    for n in range(updates):
        await send_progress(session, base, watchers, match_id, f"one-{n}")
        await asyncio.sleep(interval)
    latencies = await watchers.latencies(
        {index: len(chunk) * updates for index, chunk in enumerate(watchers.chunks)}
    )
    cpu_per_update = (sum(server.cpu_times()[:2]) - cpu_before) / updates * 1000
    p50, p99 = percentiles(latencies)
    got = len(latencies)
    print(
        f"{clients} clients on one match, {updates} updates {interval} s apart ({got} delivered):"
    )
    print(f"  latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"  server CPU per update (callback plus {clients} sends): {cpu_per_update:.1f} ms")
    print(f"  server memory per idle joined connection: {per_connection / 1024:.1f} KB")
    watchers.close()


async def many_matches(session, base: str, count: int, processes: int) -> None:
    match_ids = await create_matches(session, base, count)
    watchers = Watchers(processes)
    await watchers.open(base, match_ids)
    print(f"{count} matches, one client each: rate -> latency")
    best = 0
    for rate in RATES:
        total = int(rate * STEP_SECONDS)
        started = time.perf_counter()
        pending = set()
        for n in range(total):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tag = f"r{rate}-{n}"
            pending.add(
                asyncio.create_task(
                    send_progress(session, base, watchers, match_ids[n % count], tag)
                )
            )
        await asyncio.gather(*pending)
        achieved = total / (time.perf_counter() - started)
        latencies = await watchers.latencies(
            watchers.expected([match_ids[n % count] for n in range(total)])
        )
        p50, p99 = percentiles(latencies)
        print(
            f"  {rate:5d}/s offered, {achieved:6.0f}/s sent: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
            f" ({len(latencies)}/{total} delivered)"
        )
        if p99 >= TARGET_P99_MS or len(latencies) < total or achieved < rate * 0.9:
            break
        best = rate
    print(f"  highest rate with p99 under {TARGET_P99_MS:.0f} ms: {best}/s")
    watchers.close()


async def main(args) -> None:
    env = {"HOST": "127.0.0.1"}
    if args.redis:
        env["REDIS_URL"] = args.redis
    connector = aiohttp.TCPConnector(limit=0)
    with fresh_database() as database_url:
        async with (
            server_process(database_url, **env) as (base, pid),
            aiohttp.ClientSession(connector=connector) as session,
        ):
            print(f"bus: {'redis' if args.redis else 'in-process'}")
            await one_match(
                session, base, pid, args.clients, args.updates, args.interval, args.processes
            )
            await many_matches(session, base, args.clients, args.processes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between updates")
    parser.add_argument(
        "--processes", type=int, default=4, help="client processes the WebSockets are spread over"
    )
    parser.add_argument("--redis", default="", help="REDIS_URL for the server (default: none)")
    asyncio.run(main(parser.parse_args()))
