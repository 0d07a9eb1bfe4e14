"""The live-update service itself: numbering, the capped catch-up log, the bus contract."""

import asyncio

import orjson
import pytest

from services.bus import LocalBus
from services.live import LiveUpdates
from store import live_updates
from tests.conftest import wait_until


class Recorder:
    """A room listener that keeps what it is handed."""

    def __init__(self) -> None:
        self.caught_up: list = []
        self.delivered: list = []

    async def catch_up(self, snapshot, updates) -> None:
        self.caught_up = [snapshot, *updates]

    async def deliver(self, update) -> None:
        self.delivered.append(update)


@pytest.mark.gen_test(timeout=30)
async def test_catch_up_log_keeps_the_newest_updates_only(db, create_match):
    """Guards the cap: a long run's log does not grow without bound, newest kept."""
    live = LiveUpdates(db, LocalBus(), log_limit=3)
    await live.start()
    match_id = (await create_match())["id"]
    for progress in range(1, 6):
        await live.publish(match_id, "progress", {"matchId": match_id, "progress": progress})

    recorder = Recorder()
    assert await live.join(match_id, recorder, recorder.catch_up)
    snapshot, *updates = recorder.caught_up
    assert [u.data["progress"] for u in updates] == [3, 4, 5]
    assert [u.seq for u in updates] == [snapshot.seq - 2, snapshot.seq - 1, snapshot.seq]
    await live.close()


@pytest.mark.gen_test(timeout=30)
async def test_updates_reach_each_listener_once_in_order_and_none_after_leave(db, create_match):
    """Guards the room: numbered order, a repeated bus message dropped, nothing after leave."""
    bus = LocalBus()
    live = LiveUpdates(db, bus)
    await live.start()
    match_id = (await create_match())["id"]
    first, second = Recorder(), Recorder()
    assert await live.join(match_id, first, first.catch_up)
    start = first.caught_up[0].seq

    await live.publish(match_id, "progress", {"matchId": match_id, "progress": 10})
    await wait_until(lambda: len(first.delivered) == 1)
    repeated = {"seq": start + 1, "event": "progress", "data": {"progress": 10}}
    await bus.publish(match_id, orjson.dumps(repeated))
    await live.publish(match_id, "progress", {"matchId": match_id, "progress": 20})
    await wait_until(lambda: len(first.delivered) == 2)
    assert [(u.seq, u.data["progress"]) for u in first.delivered] == [
        (start + 1, 10),
        (start + 2, 20),
    ]

    live.leave(match_id, first)
    assert await live.join(match_id, second, second.catch_up)
    await live.publish(match_id, "progress", {"matchId": match_id, "progress": 30})
    await wait_until(lambda: second.delivered)
    assert len(first.delivered) == 2
    await live.close()


@pytest.mark.gen_test(timeout=30)
async def test_publish_for_an_unknown_match_is_dropped(db):
    """Guards the seam: an update for a deleted match neither raises nor reaches anyone."""
    live = LiveUpdates(db, LocalBus())
    await live.start()
    await live.publish("00000000-0000-4000-8000-000000000000", "progress", {"progress": 1})
    await live.publish("not-a-uuid", "progress", {"progress": 1})
    recorder = Recorder()
    assert not await live.join("00000000-0000-4000-8000-000000000000", recorder, recorder.catch_up)
    await live.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_wave_of_joins_reads_the_log_once_and_keeps_none_of_it(
    db, create_match, monkeypatch
):
    """Guards reconnect storms: clients joining together share one read of the log (and so
    do not hold the room, and its live updates, behind one database read each), and each
    still gets the whole catch-up; the log is not kept after the wave (a long run's log is
    megabytes), so the next join reads again."""
    live = LiveUpdates(db, LocalBus())
    await live.start()
    match_id = (await create_match())["id"]
    for progress in (10, 20, 30):
        await live.publish(match_id, "progress", {"matchId": match_id, "progress": progress})
    reads = []
    since = live_updates.since

    async def counted(conn, match_id, after, upto=None):
        reads.append(match_id)
        return await since(conn, match_id, after, upto)

    monkeypatch.setattr(live_updates, "since", counted)
    recorders = [Recorder() for _ in range(20)]
    joined = await asyncio.gather(*(live.join(match_id, r, r.catch_up) for r in recorders))

    assert all(joined) and len(reads) == 1
    for recorder in recorders:
        snapshot, *updates = recorder.caught_up
        assert [u.data["progress"] for u in updates] == [10, 20, 30]
        assert snapshot.seq == updates[-1].seq
    alone = Recorder()
    assert await live.join(match_id, alone, alone.catch_up)
    assert len(reads) == 2
    await live.publish(match_id, "progress", {"matchId": match_id, "progress": 40})
    await wait_until(lambda: all(r.delivered for r in recorders))
    late = Recorder()
    assert await live.join(match_id, late, late.catch_up, since=updates[-1].seq)
    assert len(reads) == 3
    assert [u.data["progress"] for u in late.caught_up[1:]] == [40]
    await live.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_join_while_the_bus_is_cut_off_reads_what_other_processes_stored(db, create_match):
    """Guards the shared catch-up against a bus that stopped carrying updates (Redis down):
    a join must not be served the room's cached, older state and log."""
    here, elsewhere = LiveUpdates(db, LocalBus()), LiveUpdates(db, LocalBus())
    await here.start()
    await elsewhere.start()
    match_id = (await create_match())["id"]
    await here.publish(match_id, "progress", {"matchId": match_id, "progress": 10})
    first = Recorder()
    assert await here.join(match_id, first, first.catch_up)

    await elsewhere.publish(match_id, "progress", {"matchId": match_id, "progress": 20})
    late = Recorder()
    assert await here.join(match_id, late, late.catch_up)
    snapshot, *updates = late.caught_up
    assert [u.data["progress"] for u in updates] == [10, 20]
    assert snapshot.seq == updates[-1].seq
    await wait_until(lambda: first.delivered)
    assert [u.data["progress"] for u in first.delivered] == [20]
    await here.close()
    await elsewhere.close()
