"""`GET /` names the service; `GET /health` says whether it can do its work."""

from __future__ import annotations

import asyncio

import psycopg2
from sqlalchemy import select, text

from handlers.base import APIHandler

NAME = "matcha-orchestrator"
VERSION = "1.0.0"
DB_CHECK_SECONDS = 3


class RootHandler(APIHandler):
    def get(self) -> None:
        self.write_json({"name": NAME, "version": VERSION})

    head = get


class HealthHandler(APIHandler):
    async def get(self) -> None:
        try:
            await asyncio.wait_for(self.db.fetch_value(select(text("1"))), DB_CHECK_SECONDS)
            database = "up"
        except (psycopg2.Error, OSError, TimeoutError):
            database = "down"
        live = self.settings["live"].health()
        if database != "up":
            status = "unavailable"
        else:
            # Without Redis callbacks still work; only live push waits for it to come back.
            status = "degraded" if live["redis"] == "down" else "ok"
        self.write_json(
            {"status": status, "database": database, **live},
            status=503 if status == "unavailable" else 200,
        )

    # Load balancers and uptime checks often probe with HEAD.
    head = get


routes = [
    (r"/", RootHandler),
    (r"/health", HealthHandler),
]
