"""The catch-up log: live updates of a match's current run, numbered per match."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Text, bindparam, cast, delete, insert, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.expression import CTE, ColumnElement, Select, Update

from store.db import Connection, Row
from store.tables import live_updates, matches


def numbered_and_logged(numbered: CTE, kind: ColumnElement, payload: ColumnElement) -> Select:
    """One statement that logs an update of a match under its next number.

    `numbered` is a CTE of an UPDATE of matches that raises `live_seq` by one and returns
    (at least) `id` and `live_seq`; `payload` may use its columns. The statement logs the
    update, trims the log to the newest `keep` (a parameter), and returns `numbered`'s columns
    with the logged `payload`: no row when the UPDATE matched none. The row lock the UPDATE
    takes orders concurrent updates, and a number is visible only together with its logged
    update (a reader never sees 6 without 5).
    """
    logged = (
        insert(live_updates)
        .from_select(
            ["match_id", "seq", "kind", "payload"],
            select(numbered.c.id, numbered.c.live_seq, kind, payload),
        )
        .returning(live_updates.c.payload)
        .cte("logged")
    )
    trimmed = delete(live_updates).where(
        live_updates.c.match_id == select(numbered.c.id).scalar_subquery(),
        live_updates.c.seq
        <= select(numbered.c.live_seq).scalar_subquery() - bindparam("keep", type_=BigInteger),
    )
    return select(*numbered.c, logged.c.payload).add_cte(trimmed.cte("trimmed"))


def next_number(**changes: Any) -> Update:
    """An UPDATE of matches that gives the match its next update number, with `changes`."""
    return update(matches).values(live_seq=matches.c.live_seq + 1, **changes)


# Templates (compiled once): every callback records one update.
_RECORD = numbered_and_logged(
    next_number()
    .where(matches.c.id == bindparam("match_id"))
    .returning(matches.c.id, matches.c.live_seq)
    .cte("numbered"),
    kind=bindparam("kind", type_=Text),
    payload=cast(bindparam("payload"), JSONB),
)
_SINCE = (
    select(live_updates.c.seq, live_updates.c.kind, live_updates.c.payload)
    .where(
        live_updates.c.match_id == bindparam("match_id"),
        live_updates.c.seq > bindparam("after", type_=BigInteger),
        live_updates.c.seq <= bindparam("upto", type_=BigInteger),
    )
    .order_by(live_updates.c.seq)
)
_STATE = select(matches.c.status, matches.c.progress, matches.c.stage, matches.c.live_seq).where(
    matches.c.id == bindparam("match_id")
)
_CLEAR = delete(live_updates).where(live_updates.c.match_id == bindparam("match_id"))

# Above any number a match will reach: "no upper bound" for `since`.
_NO_LIMIT = 2**62


async def record(
    conn: Connection, match_id: str, kind: str, payload: dict, keep: int
) -> int | None:
    """Numbers and logs one update, keeping the match's newest `keep`; None if the match is gone."""
    row = await conn.fetch_one(
        _RECORD, {"match_id": match_id, "kind": kind, "payload": payload, "keep": keep}
    )
    return None if row is None else row["live_seq"]


async def since(conn: Connection, match_id: str, after: int, upto: int | None = None) -> list[Row]:
    """Logged updates numbered above `after` (and at most `upto`), oldest first."""
    upto = _NO_LIMIT if upto is None else upto
    return await conn.fetch_all(_SINCE, {"match_id": match_id, "after": after, "upto": upto})


async def state(conn: Connection, match_id: str) -> Row | None:
    """Status, progress, stage and the last update number of a match; None if unknown."""
    return await conn.fetch_one(_STATE, {"match_id": match_id})


async def clear(conn: Connection, match_id: str) -> None:
    """Forgets every logged update of the match (a new run starts)."""
    await conn.execute(_CLEAR, {"match_id": match_id})
