"""The catch-up log: live updates of a match's current run, numbered per match."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update

from store.db import Connection, Row
from store.tables import live_updates, matches


async def next_seq(conn: Connection, match_id: str) -> int | None:
    """Number the match's next update; None if the match is gone.

    The row lock taken here is held until the caller's transaction ends, so numbers are
    committed in the order they are given (a reader never sees 6 without 5).
    """
    return await conn.fetch_value(
        update(matches)
        .where(matches.c.id == match_id)
        .values(live_seq=matches.c.live_seq + 1)
        .returning(matches.c.live_seq)
    )


async def append(conn: Connection, match_id: str, seq: int, kind: str, payload: dict) -> None:
    await conn.execute(
        insert(live_updates).values(match_id=match_id, seq=seq, kind=kind, payload=payload)
    )


async def trim(conn: Connection, match_id: str, keep_after: int) -> None:
    """Forget the match's updates numbered `keep_after` or lower."""
    await conn.execute(
        delete(live_updates).where(
            live_updates.c.match_id == match_id, live_updates.c.seq <= keep_after
        )
    )


async def clear(conn: Connection, match_id: str) -> None:
    """Forget every logged update of the match (a new run starts)."""
    await conn.execute(delete(live_updates).where(live_updates.c.match_id == match_id))


async def since(conn: Connection, match_id: str, after: int, upto: int | None = None) -> list[Row]:
    """Logged updates numbered above `after` (and at most `upto`), oldest first."""
    query = select(live_updates.c.seq, live_updates.c.kind, live_updates.c.payload).where(
        live_updates.c.match_id == match_id, live_updates.c.seq > after
    )
    if upto is not None:
        query = query.where(live_updates.c.seq <= upto)
    return await conn.fetch_all(query.order_by(live_updates.c.seq))


async def state(conn: Connection, match_id: str) -> Row | None:
    """Status, progress, stage and the last update number of a match; None if unknown."""
    return await conn.fetch_one(
        select(matches.c.status, matches.c.progress, matches.c.stage, matches.c.live_seq).where(
            matches.c.id == match_id
        )
    )
