"""Alembic environment: connects with psycopg2 to the DSN handed over by `store.migrate`."""

import psycopg2
from alembic import context
from sqlalchemy import create_engine, pool, text

from store.db import with_connect_timeout
from store.tables import metadata

# Processes starting together take turns: the second finds the schema already current.
MIGRATION_LOCK_KEY = 7_202_611


def run_migrations_online() -> None:
    # Bounded, so that a server that accepts the connection but never answers fails the start.
    dsn = with_connect_timeout(context.config.attributes["dsn"])
    engine = create_engine(
        "postgresql+psycopg2://", creator=lambda: psycopg2.connect(dsn), poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=metadata)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()


run_migrations_online()
