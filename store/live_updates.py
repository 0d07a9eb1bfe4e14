"""The catch-up log: live updates of a match's current run, numbered per match."""

from __future__ import annotations

from sqlalchemy import BigInteger, Text, bindparam, cast, delete, insert, select, update
from sqlalchemy.dialects.postgresql import JSONB, UUID

from store.db import Connection, Row
from store.tables import live_updates, matches

# Templates (compiled once): every callback records one update.
_numbered = (
    update(matches)
    .where(matches.c.id == bindparam("match_id"))
    .values(live_seq=matches.c.live_seq + 1)
    .returning(matches.c.live_seq)
    .cte("numbered")
)
_logged = insert(live_updates).from_select(
    ["match_id", "seq", "kind", "payload"],
    select(
        cast(bindparam("match_id"), UUID(as_uuid=False)),
        _numbered.c.live_seq,
        bindparam("kind", type_=Text),
        cast(bindparam("payload"), JSONB),
    ),
)
_trimmed = delete(live_updates).where(
    live_updates.c.match_id == bindparam("match_id"),
    live_updates.c.seq
    <= select(_numbered.c.live_seq).scalar_subquery() - bindparam("keep", type_=BigInteger),
)
_RECORD = select(_numbered.c.live_seq).add_cte(_logged.cte("logged"), _trimmed.cte("trimmed"))

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
    """Numbers and logs one update, keeping the match's newest `keep`; None if the match is gone.

    One statement: the row lock it takes on the match orders concurrent updates, and a number
    is visible only together with its logged update (a reader never sees 6 without 5).
    """
    return await conn.fetch_value(
        _RECORD, {"match_id": match_id, "kind": kind, "payload": payload, "keep": keep}
    )


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
