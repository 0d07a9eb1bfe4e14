"""The dispatch queue's timing, as the dispatcher's claim loop reads it."""

import pytest

from store import jobs


@pytest.mark.gen_test
async def test_an_empty_queue_has_nothing_to_wait_for(db):
    """None, not 0: with 0 the idle dispatcher queried the database again at once, forever."""
    async with db.connection() as conn:
        assert await jobs.seconds_until_next_due(conn) is None
