"""End to end with the frontend's own library: npm `socket.io-client` v4, run by node."""

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.live_clients import READ_SECONDS, callback, event

E2E = Path(__file__).parent / "e2e"


@pytest.fixture(scope="session")
def watch_script() -> Path:
    """`tests/e2e/watch.js`, with its locked dependencies installed (`npm ci`) if missing."""
    assert shutil.which("node") and shutil.which("npm"), "node and npm are needed for this test"
    if not (E2E / "node_modules" / "socket.io-client").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=E2E, check=True)
    return E2E / "watch.js"


@pytest.mark.parametrize("mode", ["websocket", "polling"])
@pytest.mark.gen_test(timeout=60)
async def test_frontend_client_joins_and_receives_every_event(
    http_server, base_url, create_match, watch_script, mode
):
    """Guards compatibility with the real frontend client over both of its transport setups."""
    match_id = (await create_match())["id"]
    node = await asyncio.create_subprocess_exec(
        "node", str(watch_script), base_url, match_id, mode, stdout=asyncio.subprocess.PIPE
    )
    received = []

    async def read_until(name: str) -> None:
        while not received or received[-1]["event"] != name:
            line = await asyncio.wait_for(node.stdout.readline(), READ_SECONDS)
            assert line, f"the client exited before {name}: {received}"
            received.append(json.loads(line))

    try:
        await read_until("ack")
        assert received == [
            {"event": "joined", "data": match_id},
            {"event": "ack", "data": {"event": "joined", "data": match_id}},
        ]
        await callback(base_url, match_id, "progress", {"progress": 40, "stage": "detecting"})
        await callback(base_url, match_id, "live-event", event(3))
        await callback(base_url, match_id, "tracking-update", {"frames": [{"t": 1, "p": []}]})
        await callback(base_url, match_id, "complete", {"events": [event(3)]})
        await read_until("complete")
    finally:
        if node.returncode is None:
            node.kill()
        await node.wait()

    assert [item["event"] for item in received[2:]] == [
        "progress",
        "matchEvent",
        "trackingUpdate",
        "progress",
        "complete",
    ]
    assert received[2]["data"] == {"matchId": match_id, "progress": 40, "stage": "detecting"}
    assert received[3]["data"]["event"]["type"] == "GOAL"
    assert received[4]["data"]["frames"] == [{"t": 1, "p": []}]
    complete = received[6]["data"]
    assert (complete["eventCount"], complete["highlightCount"]) == (1, 0)
    if mode == "websocket":
        assert complete["transport"] == "websocket"
