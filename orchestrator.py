"""Matcha orchestrator: `python orchestrator.py [serve|migrate]`.

Reads the configuration from the environment, opens the shared resources (database, bus,
dispatcher), builds the Tornado application and serves it until SIGTERM or SIGINT, then shuts
down gracefully: no new connections, WebSockets closed with 1001 "going away", requests in
flight get SHUTDOWN_GRACE_SECONDS to finish, jobs being handed to inference are finished or
given back to the queue, and the exit code is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator

import tornado.netutil
import tornado.web
import uvloop

from handlers import callbacks, health, live, matches, media, uploads
from handlers.base import NotFoundHandler, with_api_prefix
from handlers.server import DrainingHTTPServer, OpenWebSockets
from handlers.socket_io import SocketIOEndpoint
from services.analysis import Analysis
from services.bus import make_bus
from services.config import Config, ConfigError, load_config
from services.dispatch import Dispatcher
from services.live import LiveUpdates
from services.matches import Matches
from services.partial_uploads import UploadFolder
from store import migrate
from store.db import Database, DatabaseUnavailable
from store.embedded import start_embedded_postgres

log = logging.getLogger("orchestrator")


class CannotStart(RuntimeError):
    """The service cannot start as configured; the message says why, in one line."""


@dataclasses.dataclass
class Services:
    """What every handler shares, opened once per process."""

    db: Database
    live: LiveUpdates
    socket_io: SocketIOEndpoint
    websockets: OpenWebSockets
    dispatcher: Dispatcher
    matches: Matches
    analysis: Analysis
    uploads: UploadFolder


def resolve_database_url(config: Config) -> str:
    """DATABASE_URL, or an embedded PostgreSQL in DATA_DIR when it is empty."""
    return config.database_url or start_embedded_postgres(config.data_dir)


@contextlib.asynccontextmanager
async def open_services(config: Config, dsn: str) -> AsyncIterator[Services]:
    """Migrates the database, then opens the pool, bus and dispatcher; closes them after."""
    await asyncio.get_running_loop().run_in_executor(None, migrate.upgrade, dsn)
    db = await Database.connect(dsn, config.db_pool_size)
    live = LiveUpdates(db, make_bus(config.redis_url))
    await live.start()
    socket_io = SocketIOEndpoint(live, config.cors_origin)
    dispatcher = Dispatcher(db, live, config)
    await dispatcher.start()
    try:
        yield Services(
            db=db,
            live=live,
            socket_io=socket_io,
            websockets=OpenWebSockets(),
            dispatcher=dispatcher,
            matches=Matches(db, live, config.upload_dir),
            analysis=Analysis(db, live),
            uploads=UploadFolder(config.upload_dir),
        )
    finally:
        await dispatcher.stop()
        await socket_io.close()
        await live.close()
        await db.close()


def make_app(config: Config, services: Services) -> tornado.web.Application:
    routes = with_api_prefix(
        health.routes
        + matches.routes
        + uploads.routes
        + callbacks.routes
        + media.routes
        + live.routes
    )
    return tornado.web.Application(
        routes + services.socket_io.routes,
        default_handler_class=NotFoundHandler,
        config=config,
        **live.WEBSOCKET_SETTINGS,
        **vars(services),
    )


async def serve(config: Config) -> None:
    # Before anything slow: a stop signal while the embedded PostgreSQL starts or migrations
    # run would otherwise kill the process outright, leaving that PostgreSQL running.
    stop = _stop_signals()
    # The port first: a clash is told before the database is started for nothing.
    try:
        sockets = tornado.netutil.bind_sockets(config.port, config.host)
    except OSError as error:
        raise CannotStart(
            f"cannot listen on {config.host}:{config.port}: {error.strerror or error}"
        ) from None
    check_upload_dir(config.upload_dir)
    dsn = await asyncio.get_running_loop().run_in_executor(None, resolve_database_url, config)
    async with open_services(config, dsn) as services:
        if removed := await services.uploads.sweep(services.matches.stored_names):
            log.info("removed %d partial uploads left by a stopped process", removed)
        server = DrainingHTTPServer(make_app(config, services), xheaders=True)
        server.add_sockets(sockets)
        log.info("listening on %s:%d", config.host, config.port)
        if not config.callback_secret:
            log.warning("CALLBACK_SECRET is not set: inference callbacks are accepted unsigned")
        if stop.done():
            log.info("stop signal came during start-up")
        signum = await stop
        log.info("%s received: shutting down", signal.Signals(signum).name)
        await shut_down(server, services, config.shutdown_grace_seconds)
    log.info("stopped")


def check_upload_dir(path: str) -> None:
    """Creates UPLOAD_DIR if needed; refuses one that uploads could not be written to, or that
    the start-up sweep could not list (either would fail later: every upload, or the sweep)."""
    doing = "cannot create it"
    try:
        os.makedirs(path, exist_ok=True)
        doing = "cannot write a file in it"
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
        doing = "cannot list it"
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as error:
        raise CannotStart(f"UPLOAD_DIR={path!r}: {doing}: {error.strerror or error}") from None


def _stop_signals() -> asyncio.Future[int]:
    """Handles SIGTERM and SIGINT from now on; the future is the first that came."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[int] = loop.create_future()

    def on_signal(signum: int) -> None:
        if not received.done():
            received.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return received


async def shut_down(server: DrainingHTTPServer, services: Services, grace: float) -> None:
    """Ends Socket.IO long-polling sessions, stops accepting, closes WebSockets with 1001, and
    lets requests and hand-offs in flight finish within `grace` seconds."""
    # First, or their pending polls would count as requests in flight for the whole grace.
    await services.socket_io.end_polling_sessions()
    unfinished, _, _ = await asyncio.gather(
        server.drain(grace),
        services.websockets.close_all(grace),
        services.dispatcher.stop(grace),
    )
    if unfinished:
        log.warning("closing %d request(s) still running after %.0f s", unfinished, grace)
    await server.close_all_connections()
    if cut := await services.uploads.discard_unfinished():
        log.warning("removed %d upload(s) cut off by the shutdown", cut)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "serve"
    if command not in ("serve", "migrate"):
        print(f"usage: {argv[0]} [serve|migrate]", file=sys.stderr)
        return 2
    try:
        config = load_config(os.environ)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if command == "migrate":
            migrate.upgrade(resolve_database_url(config))
            log.info("database schema is current")
        else:
            # uvloop's event loop: a third less CPU per request than asyncio's own.
            uvloop.run(serve(config))
    except DatabaseUnavailable as error:
        print(f"database unavailable: {error}", file=sys.stderr)
        return 1
    except CannotStart as error:
        print(f"cannot start: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
