"""The default with no DATABASE_URL: an embedded PostgreSQL in DATA_DIR, on the same code path."""

import json
import signal

import pytest

from tests.test_durability import create_match


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
