"""Fixtures: a fresh database per test, the app on Tornado's test server, a fake engine.

PostgreSQL comes from TEST_DATABASE_URL (default: the local server at 127.0.0.1:5432), or,
when none answers, from an embedded server started once for the session. Each test gets
its own database cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path

import psycopg2
import pytest
import tornado.httpserver
import tornado.web
from psycopg2 import sql

from orchestrator import make_app, open_services
from services.config import load_config
from store import migrate
from store.embedded import start_embedded_postgres
from tests.fake_inference import FakeInference

DATA = Path(__file__).parent / "data"
SAMPLE_MP4 = DATA / "sample.mp4"


def _with_database(url: str, name: str) -> str:
    """The same server URL, pointing at database `name` (libpq `dbname` overrides the path)."""
    return psycopg2.extensions.make_dsn(url, dbname=name)


def _admin(url: str):
    conn = psycopg2.connect(url, connect_timeout=3)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> str:
    """A URL of a PostgreSQL server the tests may create databases on."""
    url = os.environ.get("TEST_DATABASE_URL", "postgresql://root@127.0.0.1:5432/test")
    try:
        _admin(url).close()
    except psycopg2.OperationalError:
        url = start_embedded_postgres(str(tmp_path_factory.mktemp("embedded-postgres")))
    return url


@pytest.fixture(scope="session")
def template_database(pg_server) -> str:
    """A migrated database that each test's database is cloned from."""
    name = f"matcha_template_{uuid.uuid4().hex[:8]}"
    with contextlib.closing(_admin(pg_server)) as conn, conn.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate.upgrade(_with_database(pg_server, name))
    yield name
    with contextlib.closing(_admin(pg_server)) as conn, conn.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(pg_server, template_database) -> str:
    name = f"matcha_test_{uuid.uuid4().hex[:12]}"
    with contextlib.closing(_admin(pg_server)) as conn, conn.cursor() as cursor:
        cursor.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_database)
            )
        )
    yield _with_database(pg_server, name)
    with contextlib.closing(_admin(pg_server)) as conn, conn.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def inference(io_loop) -> FakeInference:
    """A real HTTP server standing in for the inference engine; records the jobs it gets."""
    engine = FakeInference()
    io_loop.run_sync(engine.start)
    yield engine
    io_loop.run_sync(engine.stop)


@pytest.fixture
def upload_dir(tmp_path) -> Path:
    path = tmp_path / "uploads"
    path.mkdir()
    return path


@pytest.fixture
def config(request, database_url, inference, upload_dir):
    """The test app's settings; `@pytest.mark.config(MAX_UPLOAD_BYTES="4KiB")` changes some
    for one test, by the same environment names the service reads."""
    marker = request.node.get_closest_marker("config")
    return load_config(
        {
            "DATABASE_URL": database_url,
            "INFERENCE_URL": inference.url,
            "UPLOAD_DIR": str(upload_dir),
            "DISPATCH_BACKOFF_SECONDS": "0.05",
            "DISPATCH_POLL_SECONDS": "1",
            "LOG_LEVEL": "WARNING",
            **(marker.kwargs if marker else {}),
        }
    )


@pytest.fixture
def services(io_loop, config):
    stack = contextlib.AsyncExitStack()
    opened = io_loop.run_sync(
        lambda: stack.enter_async_context(open_services(config, config.database_url))
    )
    yield opened
    io_loop.run_sync(stack.aclose)


@pytest.fixture
def app(config, services) -> tornado.web.Application:
    return make_app(config, services)


@pytest.fixture
def db(services):
    return services.db


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01):
    """Polls an (async or plain) predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
