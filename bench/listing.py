"""The dashboard's list with 10,000 matches, against a real server process.

    .venv/bin/python -m bench.listing [--matches 10000]

The dashboard polls `GET /matches` every 5 s; this prints how long a page of 50, and the
whole list, take to answer.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
import psycopg2

from bench.server import fresh_database, server_process


def fill(database_url: str, count: int) -> None:
    """Inserts `count` completed matches with counts and a few KB of results each."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO matches (upload_url, status, progress, duration, summary,
                                 event_count, highlight_count, tracking_data, created_at)
            SELECT '/uploads/' || n || '.mp4', 'COMPLETED', 100, 5400, 'A match.', 40, 6,
                   '[{"t": 0, "b": [], "p": []}]'::jsonb, now() - n * interval '1 minute'
            FROM generate_series(1, %s) AS n
            """,
            (count,),
        )


async def timed_get(session, url: str, runs: int) -> tuple[float, int]:
    timings, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        async with session.get(url) as response:
            size = len(await response.read())
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000, size


async def main(args) -> None:
    with fresh_database() as database_url:
        async with server_process(database_url) as (base, _):
            fill(database_url, args.matches)
            async with aiohttp.ClientSession() as session:
                for label, path in (
                    ("page of 50", "/matches?limit=50"),
                    ("whole list", "/matches"),
                ):
                    millis, size = await timed_get(session, base + path, 20)
                    print(
                        f"GET {label} of {args.matches} matches: {millis:.1f} ms median, "
                        f"{size / 1e6:.2f} MB"
                    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matches", type=int, default=10_000)
    asyncio.run(main(parser.parse_args()))
