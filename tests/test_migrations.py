"""The Alembic migrations: `python orchestrator.py migrate`, and the schema they build."""

import contextlib
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg2 import sql

from store.migrate import alembic_config
from store.tables import metadata
from tests.conftest import admin_connection, drop_database, with_database

ROOT = Path(__file__).parent.parent


def engine_for(url: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(
        "postgresql+psycopg2://",
        creator=lambda: psycopg2.connect(url),
        poolclass=sqlalchemy.pool.NullPool,
    )


def test_migrations_build_the_schema_the_tables_declare(database_url):
    """Guards against a table change without its migration (or the reverse)."""
    engine = engine_for(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_migrate_command_brings_an_empty_database_to_the_newest_revision(pg_server):
    name = f"matcha_migrate_{uuid.uuid4().hex[:8]}"
    with contextlib.closing(admin_connection(pg_server)) as conn, conn.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(pg_server, name)
    try:
        for _ in range(2):  # the second run finds nothing to do
            result = subprocess.run(
                [sys.executable, "orchestrator.py", "migrate"],
                cwd=ROOT,
                env={"DATABASE_URL": url},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr
            assert "database schema is current" in result.stderr
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT version_num FROM alembic_version")
            assert cursor.fetchall() == [(head,)]
    finally:
        drop_database(pg_server, name)
