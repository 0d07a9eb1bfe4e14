"""Apply the Alembic migrations in `store/migrations` to a database."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy.exc
from alembic import command
from alembic.config import Config

from store.db import DatabaseUnavailable, first_line

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(dsn: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["dsn"] = dsn
    return config


def upgrade(dsn: str) -> None:
    """Bring the schema to the newest revision (blocking; safe to run from several processes)."""
    try:
        command.upgrade(alembic_config(dsn), "head")
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as error:
        raise DatabaseUnavailable(first_line(error.orig)) from None
