"""The default with no DATABASE_URL: an embedded PostgreSQL in DATA_DIR, on the same code path."""

import json
import signal
from pathlib import Path

import psutil
import pytest

from tests.conftest import settings_env
from tests.server_process import ServerProcess
from tests.test_durability import create_match
from tests.waiting import wait_until


@pytest.mark.gen_test(timeout=120)
async def test_without_database_url_data_survives_a_restart(
    start_server, client, inference, tmp_path
):
    """Guards the README's run command on a machine with nothing installed: the service starts
    its own PostgreSQL, and what it stored is there after a restart."""
    data_dir = tmp_path / "data"
    embedded = {"DATABASE_URL": "", "DATA_DIR": str(data_dir)}
    first = await start_server(**embedded)
    created = await create_match(client, first)
    await inference.wait_for_jobs(1)
    first.signal(signal.SIGTERM)
    assert await first.exited() == 0
    assert (data_dir / "postgres" / "PG_VERSION").is_file()

    second = await start_server(**embedded)
    try:
        listed = json.loads((await client.fetch(second.url + "/matches")).body)
        assert [match["id"] for match in listed] == [created["id"]]
    finally:
        second.signal(signal.SIGTERM)  # so that it stops its PostgreSQL too
        assert await second.exited() == 0


def postgres_serving(pgdata: Path) -> list[psutil.Process]:
    """The postmaster of the embedded server in `pgdata`, if one runs."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.fixture
def embedded(tmp_path):
    """Settings for a server on its own embedded PostgreSQL; that PostgreSQL is stopped at
    teardown if a failing test left it running."""
    data_dir = tmp_path / "data"
    yield {"DATABASE_URL": "", "DATA_DIR": str(data_dir)}
    for process in postgres_serving((data_dir / "postgres").resolve()):
        process.terminate()


@pytest.mark.gen_test(timeout=120)
async def test_a_killed_server_does_not_keep_the_next_from_stopping_postgres(
    start_server, embedded
):
    """Guards against an orphan PostgreSQL after every clean stop, once one process was killed
    outright: its pid stayed on the list of the server's users, so no later process was ever
    the last one to leave."""
    pgdata = Path(embedded["DATA_DIR"], "postgres").resolve()
    first = await start_server(**embedded)
    first.kill()
    assert postgres_serving(pgdata)  # a kill -9 leaves it running: the next start reuses it

    second = await start_server(**embedded)
    second.signal(signal.SIGTERM)
    assert await second.exited() == 0
    await wait_until(lambda: not postgres_serving(pgdata))


@pytest.mark.gen_test(timeout=120)
async def test_sigterm_while_postgres_starts_stops_it_cleanly(request, embedded, tmp_path):
    """Guards against a stop signal during start-up killing the process outright, and leaving
    the PostgreSQL it was starting running."""
    pgdata = Path(embedded["DATA_DIR"], "postgres").resolve()
    server = ServerProcess(settings_env(request, **embedded), tmp_path / "server.log")
    try:
        await wait_until(lambda: postgres_serving(pgdata), timeout=60, interval=0.02)
        server.signal(signal.SIGTERM)
        assert await server.exited(timeout=60) == 0
    finally:
        server.kill()
    assert not postgres_serving(pgdata)
