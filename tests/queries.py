"""What tests read straight from the database to check what the service did."""

from __future__ import annotations

from sqlalchemy import func, select

from store import matches as store_matches
from store.db import Database, Row
from store.tables import dispatch_jobs


async def match_row(db: Database, match_id: str) -> Row | None:
    async with db.connection() as conn:
        return await store_matches.get_match_detail(conn, match_id)


async def queued_jobs(db: Database, match_id: str | None = None) -> list[Row]:
    query = select(*dispatch_jobs.c)
    if match_id is not None:
        query = query.where(dispatch_jobs.c.match_id == match_id)
    return await db.fetch_all(query)


async def queue_is_empty(db: Database) -> bool:
    return await db.fetch_value(select(func.count()).select_from(dispatch_jobs)) == 0
