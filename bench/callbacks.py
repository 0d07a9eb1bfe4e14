"""Callback throughput and full-match ingest, against a real server process.

    .venv/bin/python -m bench.callbacks [--progress 6000] [--matches 32]

Starts `orchestrator.py` on a free port with a fresh database on TEST_DATABASE_URL's server
(default: 127.0.0.1:5432), then measures:
- progress callbacks per second on that one process (target: 1,500/s or more), and the
  server's CPU time per callback: with the client and PostgreSQL on the same cores, the rate
  is a floor, and 1 / CPU time is what the process does with a core to itself;
- the time to ingest a full-match `complete` (2,000 events, 5,400 tracking frames of 25
  boxes, 5,400 emotion scores; target under 2 s) and to read it back with GET.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import aiohttp
import psutil

from bench.server import fresh_database, server_process


def full_match_complete() -> dict:
    rng = random.Random(7)
    box = lambda: [round(rng.random(), 4) for _ in range(4)]  # noqa: E731
    return {
        "events": [
            {
                "timestamp": i * 2.7,
                "type": rng.choice(["GOAL", "FOUL", "TACKLE", "SAVE"]),
                "confidence": rng.random(),
                "finalScore": rng.random() * 10,
                "commentary": "A sweeping move down the left ends in a shot. " * 3,
            }
            for i in range(2000)
        ],
        "highlights": [
            {
                "startTime": i * 90.0,
                "endTime": i * 90.0 + 15,
                "score": rng.random() * 10,
                "eventType": "GOAL",
                "commentary": "Highlight",
                "videoUrl": f"/uploads/h{i}.mp4",
            }
            for i in range(60)
        ],
        "emotionScores": [
            {
                "timestamp": float(i),
                "audioScore": rng.random(),
                "motionScore": rng.random(),
                "contextWeight": rng.random(),
                "finalScore": rng.random() * 10,
            }
            for i in range(5400)
        ],
        "trackingData": [
            {"t": float(i), "b": [[*box(), 0.9]], "p": [[*box(), n, n % 2] for n in range(24)]}
            for i in range(5400)
        ],
        "duration": 5400.0,
        "summary": "A full match.",
        "teamColors": [[255, 0, 0], [0, 0, 255]],
        "topSpeedKmh": 33.1,
    }


async def progress_rate(session, base: str, match_ids: list[str], total: int) -> float:
    """Each match's engine reports its own progress one callback after another, as a real
    engine does; the matches report concurrently."""
    remaining = iter(range(total))

    async def engine(match_id: str):
        for n in remaining:
            async with session.post(
                f"{base}/matches/{match_id}/progress", json={"progress": n * 100 // total}
            ) as response:
                assert response.status == 201, await response.text()

    started = time.perf_counter()
    await asyncio.gather(*(engine(match_id) for match_id in match_ids))
    return total / (time.perf_counter() - started)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def main(args) -> None:
    with fresh_database() as database_url:
        async with server_process(database_url) as (base, pid):
            await measure(args, base, psutil.Process(pid))


async def measure(args, base: str, server: psutil.Process) -> None:
    async with aiohttp.ClientSession() as session:
        match_ids = []
        for n in range(args.matches):
            async with session.post(
                f"{base}/matches/youtube", json={"url": f"https://v.example/{n}"}
            ) as response:
                match_ids.append((await response.json())["id"])
        await progress_rate(session, base, match_ids, 500)  # warm-up
        cpu_before = cpu_seconds(server)
        rate = await progress_rate(session, base, match_ids, args.progress)
        cpu_ms = (cpu_seconds(server) - cpu_before) / args.progress * 1000
        print(
            f"progress callbacks: {rate:,.0f}/s ({args.progress} requests, "
            f"{args.matches} matches reporting at once, one process); server CPU "
            f"{cpu_ms:.2f} ms each, so {1000 / cpu_ms:,.0f}/s when the process has a core to itself"
        )
        match_id = match_ids[0]

        body = json.dumps(full_match_complete()).encode()
        print(f"complete body: {len(body) / 1e6:.1f} MB")
        for attempt in (1, 2):
            started = time.perf_counter()
            async with session.post(
                f"{base}/matches/{match_id}/complete",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response:
                assert response.status == 201, await response.text()
            print(f"complete ingest #{attempt}: {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        async with session.get(f"{base}/matches/{match_id}") as response:
            detail = await response.read()
        elapsed = time.perf_counter() - started
        parsed = json.loads(detail)
        print(
            f"GET detail: {elapsed:.2f} s, {len(detail) / 1e6:.1f} MB, "
            f"{len(parsed['events'])} events, {len(parsed['emotionScores'])} emotion scores"
        )
        started = time.perf_counter()
        async with session.get(f"{base}/matches") as response:
            await response.read()
        print(f"GET list: {(time.perf_counter() - started) * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--progress", type=int, default=6000)
    parser.add_argument("--matches", type=int, default=32)
    asyncio.run(main(parser.parse_args()))
