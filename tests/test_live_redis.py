"""Live updates over Redis: an outage does not break callbacks, and processes act as one."""

import asyncio
import json
import logging

import pytest
import tornado.httpclient

from bench.server import server_process
from tests.conftest import wait_until
from tests.live_clients import (
    FreezableProxy,
    NativeClient,
    SocketIOWatcher,
    callback,
    create_match_over_http,
    event,
)


@pytest.fixture
def config(config, redis_server):
    return config.replace(redis_url=redis_server.url)


async def redis_state(base_url: str) -> str:
    response = await tornado.httpclient.AsyncHTTPClient().fetch(base_url + "/health")
    return json.loads(response.body)["redis"]


@pytest.mark.gen_test(timeout=60)
async def test_redis_outage_keeps_callbacks_working_and_push_resumes(
    ws_connect, base_url, create_match, redis_server, caplog
):
    """Guards the outage rules: 2xx and stored while Redis is down, logged once, nothing lost
    for a watcher once Redis is back, and /health telling the state."""
    caplog.set_level(logging.INFO, logger="services.bus")
    match_id = (await create_match())["id"]
    client = await ws_connect()
    start = (await client.join(match_id))["seq"]
    await callback(base_url, match_id, "progress", {"progress": 10})
    assert (await client.read())["progress"] == 10
    assert await redis_state(base_url) == "up"

    redis_server.kill()
    await wait_until(lambda: _is_down(base_url))
    assert await callback(base_url, match_id, "progress", {"progress": 20}) == 201
    assert await callback(base_url, match_id, "live-event", event(5)) == 201
    assert await callback(base_url, match_id, "live-event", event(6)) == 201
    stored = await tornado.httpclient.AsyncHTTPClient().fetch(f"{base_url}/matches/{match_id}")
    assert json.loads(stored.body)["progress"] == 20

    redis_server.start()
    await wait_until(lambda: _is_up(base_url))
    missed = [await client.read() for _ in range(3)]
    assert [m["seq"] for m in missed] == [start + 2, start + 3, start + 4]
    assert missed[0]["progress"] == 20
    assert [m["event"]["timestamp"] for m in missed[1:]] == [5, 6]

    await callback(base_url, match_id, "progress", {"progress": 30})
    live = await client.read()
    assert (live["seq"], live["progress"]) == (start + 5, 30)
    bus_lines = [r.getMessage() for r in caplog.records if r.name == "services.bus"]
    assert len([line for line in bus_lines if "Redis unavailable" in line]) == 1
    assert len([line for line in bus_lines if "Redis is back" in line]) == 1


async def _is_down(base_url: str) -> bool:
    return await redis_state(base_url) == "down"


async def _is_up(base_url: str) -> bool:
    return await redis_state(base_url) == "up"


@pytest.mark.gen_test(timeout=90)
async def test_a_process_cut_off_from_redis_answers_and_later_catches_the_others_up(
    database_url, inference, redis_server
):
    """Guards a Redis that stops answering one process (a network dropping its packets, not
    refusing): its callbacks still answer, and once the link is back, clients of the other
    processes get the updates they missed, in order."""
    proxy = FreezableProxy(redis_server.port)
    await proxy.start()
    try:
        async with (
            server_process(database_url, REDIS_URL=proxy.url, INFERENCE_URL=inference.url) as (
                cut_off,
                _,
            ),
            server_process(
                database_url, REDIS_URL=redis_server.url, INFERENCE_URL=inference.url
            ) as (
                other,
                _,
            ),
        ):
            match_id = await create_match_over_http(cut_off)
            connection = await tornado.websocket.websocket_connect(
                other.replace("http://", "ws://") + "/ws"
            )
            watcher = NativeClient(connection)
            start = (await watcher.join(match_id))["seq"]
            await callback(cut_off, match_id, "progress", {"progress": 10})
            assert (await watcher.read())["seq"] == start + 1

            proxy.freeze()
            assert await callback(cut_off, match_id, "progress", {"progress": 20}) == 201
            assert await callback(cut_off, match_id, "live-event", event(7)) == 201
            assert await redis_state(cut_off) == "down"
            assert await redis_state(other) == "up"

            proxy.thaw()
            missed = [await watcher.read(timeout=30) for _ in range(2)]
            assert [m["seq"] for m in missed] == [start + 2, start + 3]
            assert (missed[0]["progress"], missed[1]["event"]["timestamp"]) == (20, 7)
            connection.close()
    finally:
        await proxy.stop()


@pytest.mark.gen_test(timeout=90)
async def test_two_processes_share_updates_through_redis(database_url, inference, redis_server):
    """Guards horizontal scaling: a callback to process A reaches clients of process B, and
    callbacks spread over both processes reach a client in number order, each once."""
    env = {"REDIS_URL": redis_server.url, "INFERENCE_URL": inference.url}
    async with (
        server_process(database_url, **env) as (first, _),
        server_process(database_url, **env) as (second, _),
    ):
        match_id = await create_match_over_http(first)
        connection = await tornado.websocket.websocket_connect(
            second.replace("http://", "ws://") + "/ws"
        )
        native = NativeClient(connection)
        start = (await native.join(match_id))["seq"]
        watcher = SocketIOWatcher()
        await watcher.connect(second, ["websocket"])
        try:
            await watcher.client.call("joinMatch", match_id, timeout=10)

            assert await callback(first, match_id, "progress", {"progress": 15}) == 201
            assert (await native.read())["progress"] == 15
            progress = await watcher.wait_for(1, "progress")
            assert progress[-1][1] == {"matchId": match_id, "progress": 15}

            await asyncio.gather(
                *(
                    callback((first, second)[n % 2], match_id, "live-event", event(n))
                    for n in range(20)
                )
            )
            updates = [await native.read() for _ in range(20)]
            assert [u["seq"] for u in updates] == list(range(start + 2, start + 22))
            assert sorted(u["event"]["timestamp"] for u in updates) == list(range(20))
            events = await watcher.wait_for(20, "matchEvent")
            assert len(events) == 20
        finally:
            await watcher.client.disconnect()
            connection.close()
