"""Live fan-out: callback-to-client latency, memory per idle connection, sustainable rate.

    .venv/bin/python -m bench.fanout [--clients 1000] [--redis redis://127.0.0.1:6379/0]

Starts one `orchestrator.py` process (in-process bus, or Redis with --redis) on a fresh
database, connects native WebSocket clients from this process over loopback, and measures:
- 1,000 clients on one match: latency from sending a `progress` callback to each client
  receiving it (p50, p99; target p99 under 50 ms);
- the server's memory per idle joined connection (RSS growth / clients; target under 20 KB);
- 1,000 matches with one client each: latency at rising callback rates, and the highest rate
  whose p99 stays under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time

import aiohttp
import psutil

from bench.server import fresh_database, server_process

TARGET_P99_MS = 50.0
RATES = (100, 200, 400, 800, 1200, 1600)
STEP_SECONDS = 3.0


class Watchers:
    """WebSocket clients that timestamp the `progress` updates tagged by the bench."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.expected = 0
        self.arrived = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    async def open(self, session, base: str, match_ids: list[str]) -> None:
        url = base.replace("http://", "ws://") + "/ws"

        async def one(match_id: str):
            ws = await session.ws_connect(url, max_msg_size=0)
            await ws.send_json({"type": "join", "matchId": match_id})
            assert (await ws.receive_json())["type"] == "snapshot"
            return ws

        sockets = []
        for start in range(0, len(match_ids), 100):
            sockets += await asyncio.gather(*(one(m) for m in match_ids[start : start + 100]))
        self.tasks = [asyncio.create_task(self._read(ws)) for ws in sockets]

    async def _read(self, ws) -> None:
        async for message in ws:
            tag = message.json().get("stage")
            sent = self.sent.get(tag)
            if sent is not None:
                self.latencies.append((time.perf_counter() - sent) * 1000)
                if len(self.latencies) >= self.expected:
                    self.arrived.set()

    def expect(self, count: int) -> None:
        self.latencies, self.expected = [], count
        self.arrived.clear()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def create_matches(session, base: str, count: int) -> list[str]:
    async def one(_: int) -> str:
        async with session.post(base + "/matches/youtube", json={"url": "https://v.test/m"}) as r:
            return (await r.json())["id"]

    ids = []
    for start in range(0, count, 50):
        ids += await asyncio.gather(*(one(n) for n in range(start, min(count, start + 50))))
    return ids


async def send_progress(session, base: str, watchers: Watchers, match_id: str, tag: str) -> None:
    watchers.sent[tag] = time.perf_counter()
    async with session.post(
        f"{base}/matches/{match_id}/progress", json={"progress": 50, "stage": tag}
    ) as response:
        response.raise_for_status()


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def wait_all(watchers: Watchers, timeout: float = 30.0) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watchers.arrived.wait(), timeout)


async def one_match(
    session, base: str, pid: int, clients: int, updates: int, interval: float
) -> None:
    (match_id,) = await create_matches(session, base, 1)
    server = psutil.Process(pid)
    before = server.memory_info().rss
    watchers = Watchers()
    await watchers.open(session, base, [match_id] * clients)
    await asyncio.sleep(1)  # let the server finish its allocations before reading RSS
    per_connection = (server.memory_info().rss - before) / clients
    watchers.expect(clients * updates)
    for n in range(updates):
        await send_progress(session, base, watchers, match_id, f"one-{n}")
        await asyncio.sleep(interval)
    await wait_all(watchers)
    p50, p99 = percentiles(watchers.latencies)
    got = len(watchers.latencies)
    print(
        f"{clients} clients on one match, {updates} updates {interval} s apart ({got} delivered):"
    )
    print(f"  latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"  server memory per idle joined connection: {per_connection / 1024:.1f} KB")
    await watchers.close()


async def many_matches(session, base: str, count: int) -> None:
    match_ids = await create_matches(session, base, count)
    watchers = Watchers()
    await watchers.open(session, base, match_ids)
    print(f"{count} matches, one client each: rate -> latency")
    best = 0
    for rate in RATES:
        total = int(rate * STEP_SECONDS)
        watchers.expect(total)
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
        await wait_all(watchers)
        p50, p99 = percentiles(watchers.latencies)
        print(
            f"  {rate:5d}/s offered, {achieved:6.0f}/s sent: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
            f" ({len(watchers.latencies)}/{total} delivered)"
        )
        if p99 >= TARGET_P99_MS or len(watchers.latencies) < total or achieved < rate * 0.9:
            break
        best = rate
    print(f"  highest rate with p99 under {TARGET_P99_MS:.0f} ms: {best}/s")
    await watchers.close()


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
            await one_match(session, base, pid, args.clients, args.updates, args.interval)
            await many_matches(session, base, args.clients)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between updates")
    parser.add_argument("--redis", default="", help="REDIS_URL for the server (default: none)")
    asyncio.run(main(parser.parse_args()))
