"""Signed callbacks' signatures, each bound to the match it was first used on."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Interval, bindparam, delete, func
from sqlalchemy.dialects.postgresql import insert

from store.db import Connection
from store.tables import callback_signatures

# Longer than any signature stays valid (its timestamp within 5 minutes either side of the
# server's clock), so that no signature is forgotten while it can still be replayed.
KEEP = timedelta(minutes=15)

_FORGET_OLD = delete(callback_signatures).where(
    callback_signatures.c.seen_at < func.now() - bindparam("keep", type_=Interval)
)
_insert = insert(callback_signatures).values(
    signature=bindparam("signature"), match_id=bindparam("match_id")
)
# A signature seen before keeps its row (the update changes nothing), so that RETURNING
# names the match it was first used on.
_BIND = (
    _insert.on_conflict_do_update(
        index_elements=[callback_signatures.c.signature],
        set_={"match_id": callback_signatures.c.match_id},
    )
    .returning(callback_signatures.c.match_id)
    .add_cte(_FORGET_OLD.cte("forgotten"))
)


async def bind(conn: Connection, signature: str, match_id: str) -> str:
    """Binds `signature` to `match_id` unless it was used before; returns the match it is
    bound to. One statement, which also forgets signatures too old to be valid."""
    return await conn.fetch_value(
        _BIND, {"signature": signature, "match_id": match_id, "keep": KEEP}
    )
