"""Real orchestrator processes for the benchmarks, each on a fresh database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psycopg2
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://root@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin(statement: sql.Composable) -> None:
    conn = psycopg2.connect(SERVER_URL)
    conn.autocommit = True
    with contextlib.closing(conn), conn.cursor() as cursor:
        cursor.execute(statement)


@contextlib.contextmanager
def fresh_database():
    name = f"matcha_bench_{uuid.uuid4().hex[:8]}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg2.extensions.make_dsn(SERVER_URL, dbname=name)
    finally:
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.asynccontextmanager
async def server_process(database_url: str, **env: str) -> AsyncIterator[tuple[str, int]]:
    """Starts `orchestrator.py`; yields (base URL, pid) once /health answers; stops it after."""
    port = free_port()
    with tempfile.TemporaryDirectory() as uploads:
        settings = {
            "DATABASE_URL": database_url,
            "PORT": str(port),
            "UPLOAD_DIR": uploads,
            # No engine: each job is tried once, then waits (the match is not FAILED, which
            # would make it ignore the benchmark's progress callbacks).
            "INFERENCE_URL": f"http://127.0.0.1:{free_port()}",
            "DISPATCH_BACKOFF_SECONDS": "3600",
            "DISPATCH_MAX_SECONDS": "86400",
            "LOG_LEVEL": "ERROR",
            **env,
        }
        process = subprocess.Popen(
            [sys.executable, "orchestrator.py"], cwd=ROOT, env={**os.environ, **settings}
        )
        base = f"http://127.0.0.1:{port}"
        try:
            await _wait_healthy(base, process)
            yield base, process.pid
        finally:
            process.terminate()
            # Off the event loop: the caller's clients may have to answer the server's goodbyes.
            await asyncio.to_thread(process.wait, 30)


@contextlib.asynccontextmanager
async def running_server(**env: str) -> AsyncIterator[str]:
    """One server process on its own fresh database; yields its base URL."""
    with fresh_database() as database_url:
        async with server_process(database_url, **env) as (base, _):
            yield base


async def _wait_healthy(base: str, process: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}/health") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError("server did not become healthy within 30 s")
