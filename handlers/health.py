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


class HealthHandler(APIHandler):
    async def get(self) -> None:
        try:
            await asyncio.wait_for(self.db.fetch_value(select(text("1"))), DB_CHECK_SECONDS)
            database = "up"
        except (psycopg2.Error, OSError, TimeoutError):
            database = "down"
        healthy = database == "up"
        self.write_json(
            {"status": "ok" if healthy else "unavailable", "database": database},
            status=200 if healthy else 503,
        )


routes = [
    (r"/", RootHandler),
    (r"/health", HealthHandler),
]
