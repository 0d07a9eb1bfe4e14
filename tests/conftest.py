"""Fixtures: a fresh database per test, the app on Tornado's test server, a fake engine.

PostgreSQL comes from TEST_DATABASE_URL (default: the local server at 127.0.0.1:5432), or,
when none answers, from an embedded server started once for the session. Each test gets
its own database cloned from a migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from pathlib import Path

import psycopg2
import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.web
import tornado.websocket
from psycopg2 import sql

from orchestrator import make_app, open_services
from services.config import load_config
from store import migrate
from store.db import Database
from store.embedded import start_embedded_postgres
from tests.fake_inference import FakeInference
from tests.live_clients import NativeClient, RedisServer, SocketIOWatcher
from tests.server_process import ServerProcess
from tests.waiting import wait_until

DATA = Path(__file__).parent / "data"
SAMPLE_MP4 = DATA / "sample.mp4"


def with_database(url: str, name: str) -> str:
    """The same server URL, pointing at database `name` (libpq `dbname` overrides the path)."""
    return psycopg2.extensions.make_dsn(url, dbname=name)


def admin_connection(url: str):
    conn = psycopg2.connect(url, connect_timeout=3)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> str:
    """A URL of a PostgreSQL server the tests may create databases on."""
    url = os.environ.get("TEST_DATABASE_URL", "postgresql://root@127.0.0.1:5432/test")
    try:
        admin_connection(url).close()
    except psycopg2.OperationalError:
        url = start_embedded_postgres(str(tmp_path_factory.mktemp("embedded-postgres")))
    return url


@pytest.fixture(scope="session")
def template_database(pg_server) -> str:
    """A migrated database that each test's database is cloned from."""
    name = f"matcha_template_{uuid.uuid4().hex[:8]}"
    with contextlib.closing(admin_connection(pg_server)) as conn, conn.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate.upgrade(with_database(pg_server, name))
    yield name
    drop_database(pg_server, name)


@pytest.fixture
def database_url(pg_server, template_database) -> str:
    name = f"matcha_test_{uuid.uuid4().hex[:12]}"
    with contextlib.closing(admin_connection(pg_server)) as conn, conn.cursor() as cursor:
        cursor.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_database)
            )
        )
    yield with_database(pg_server, name)
    drop_database(pg_server, name)


def drop_database(server_url: str, name: str) -> None:
    """Drops a database, ending its open connections (as a database outage would)."""
    with contextlib.closing(admin_connection(server_url)) as conn, conn.cursor() as cursor:
        cursor.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


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


def settings_env(request, **values: str) -> dict[str, str]:
    """Test settings as environment variables: fast retries, plus the test's `config` markers.

    `@pytest.mark.config(DISPATCH_MAX_ATTEMPTS="3")` on a test or module changes a setting.
    """
    env = {
        "DISPATCH_BACKOFF_SECONDS": "0.05",
        "DISPATCH_POLL_SECONDS": "1",
        "SHUTDOWN_GRACE_SECONDS": "5",
        "LOG_LEVEL": "WARNING",
        **values,
    }
    for marker in reversed(list(request.node.iter_markers("config"))):
        env.update(marker.kwargs)
    return env


@pytest.fixture
def config(request, database_url, inference, upload_dir):
    return load_config(
        settings_env(
            request,
            DATABASE_URL=database_url,
            INFERENCE_URL=inference.url,
            UPLOAD_DIR=str(upload_dir),
        )
    )


@pytest.fixture
def start_server(request, database_url, inference, upload_dir, tmp_path):
    """Starts `python orchestrator.py` children on the test's database and fake engine.

    `await start_server(LOG_LEVEL="INFO")` returns a healthy `ServerProcess`; keyword
    arguments are settings. Every child still running at teardown is killed.
    """
    children: list[ServerProcess] = []

    async def start(**env: str) -> ServerProcess:
        child = ServerProcess(
            settings_env(
                request,
                **{
                    "DATABASE_URL": database_url,
                    "INFERENCE_URL": inference.url,
                    "UPLOAD_DIR": str(upload_dir),
                    **env,
                },
            ),
            tmp_path / f"server-{len(children)}.log",
        )
        children.append(child)
        return await child.started()

    yield start
    for child in children:
        child.kill()


@pytest.fixture
def database(io_loop, database_url) -> Database:
    """The test database's pool alone, with no dispatcher: for tests whose servers are processes."""
    opened = io_loop.run_sync(lambda: Database.connect(database_url, size=2))
    yield opened
    io_loop.run_sync(opened.close)


@pytest.fixture
def client(io_loop) -> tornado.httpclient.AsyncHTTPClient:
    """An HTTP client for servers outside the test's app (child processes)."""
    opened = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=50)
    yield opened
    opened.close()


@pytest.fixture
def services(io_loop, config):
    stack = contextlib.AsyncExitStack()
    opened = io_loop.run_sync(
        lambda: stack.enter_async_context(open_services(config, config.database_url))
    )
    yield opened
    io_loop.run_sync(stack.aclose)
    io_loop.run_sync(_cancel_leftover_tasks)


async def _cancel_leftover_tasks() -> None:
    """Cancels what libraries left sleeping (Socket.IO's ping timers), as `asyncio.run` does."""
    leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


@pytest.fixture
def published(services, monkeypatch):
    """Every live update the service announces, as (match_id, event, data)."""
    updates = []
    broadcast = services.live.broadcast

    async def record(match_id, seq, event, data):
        updates.append((match_id, event, data))
        await broadcast(match_id, seq, event, data)

    monkeypatch.setattr(services.live, "broadcast", record)
    return updates


@pytest.fixture
def app(config, services) -> tornado.web.Application:
    return make_app(config, services)


@pytest.fixture
def db(services):
    return services.db


class Api:
    """Calls the app under test and decodes its JSON answers; never raises on 4xx/5xx."""

    def __init__(self, http_client, base_url: str) -> None:
        self.http_client = http_client
        self.base_url = base_url

    async def request(self, method: str, path: str, json_body=None, body=None, headers=None):
        if json_body is not None:
            body = json.dumps(json_body)
        response = await self.http_client.fetch(
            self.base_url + path,
            method=method,
            body=body,
            headers=headers,
            raise_error=False,
            allow_nonstandard_methods=True,
        )
        response.json = json.loads(response.body) if response.body else None
        return response

    async def get(self, path: str, **kwargs):
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json_body=None, **kwargs):
        return await self.request("POST", path, json_body=json_body, **kwargs)


@pytest.fixture
def api(http_client, base_url) -> Api:
    return Api(http_client, base_url)


@pytest.fixture
def create_match(services):
    """Creates a match from a remote URL (no upload needed) and returns its row."""

    async def create(url: str = "https://videos.example/match.mp4"):
        return await services.matches.create_from_url(url, None, None, None)

    return create


def assert_error(response, status: int, *fragments: str) -> None:
    """The contract's error shape, with a message naming what was wrong."""
    assert response.code == status, (response.code, response.body)
    assert response.json["statusCode"] == status
    assert response.json["error"]
    for fragment in fragments:
        assert fragment in response.json["message"], response.json["message"]


@pytest.fixture
def ws_connect(io_loop, http_server, base_url):
    """Opens native live WebSocket clients (`/ws`, or `path`); closes them at teardown."""
    opened = []

    async def connect(path: str = "/ws", **request_options) -> NativeClient:
        url = base_url.replace("http://", "ws://") + path
        request = tornado.httpclient.HTTPRequest(url, **request_options)
        connection = await tornado.websocket.websocket_connect(request)
        opened.append(connection)
        return NativeClient(connection)

    yield connect
    for connection in opened:
        connection.close()


@pytest.fixture
def sio_connect(io_loop):
    """Connects python-socketio clients that record what they receive; disconnects them after."""
    opened = []

    async def connect(url: str, transports: list[str] | None = None) -> SocketIOWatcher:
        watcher = SocketIOWatcher()
        await watcher.connect(url, transports)
        opened.append(watcher)
        return watcher

    yield connect
    for watcher in opened:
        io_loop.run_sync(watcher.client.disconnect)


@pytest.fixture
def redis_server(tmp_path, io_loop):
    """A private redis-server on a free port, which the test may kill and restart."""
    server = RedisServer(tmp_path)
    server.start()
    io_loop.run_sync(lambda: wait_until(server.answers))
    yield server
    server.kill()
