"""Run SQLAlchemy Core statements on an aiopg pool.

SQLAlchemy only builds and compiles the statements (for the psycopg2 dialect); aiopg sends
them with their parameters, and psycopg2 adapts the values. Nothing is ever formatted into
the SQL text.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiopg
import orjson
import psycopg2
from psycopg2.extras import Json
from sqlalchemy.dialects.postgresql import psycopg2 as pg_dialect
from sqlalchemy.sql import ClauseElement

_DIALECT = pg_dialect.dialect()

Row = dict[str, Any]


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached."""


def compile_statement(statement: ClauseElement) -> tuple[str, dict[str, Any]]:
    """SQL text with `%(name)s` placeholders, and the values to bind to them."""
    compiled = statement.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    params = {
        name: Json(value, dumps=_dumps) if isinstance(value, (dict, list)) else value
        for name, value in compiled.params.items()
    }
    return str(compiled), params


class Connection:
    """One pooled connection; statements run in autocommit unless inside `transaction()`."""

    def __init__(self, cursor: aiopg.Cursor) -> None:
        self._cursor = cursor

    async def execute(self, statement: ClauseElement) -> int:
        """Run a statement; returns the number of rows it touched."""
        sql, params = compile_statement(statement)
        await self._cursor.execute(sql, params)
        return self._cursor.rowcount

    async def fetch_all(self, statement: ClauseElement) -> list[Row]:
        await self.execute(statement)
        names = [column.name for column in self._cursor.description]
        return [dict(zip(names, values, strict=True)) for values in await self._cursor.fetchall()]

    async def fetch_one(self, statement: ClauseElement) -> Row | None:
        rows = await self.fetch_all(statement)
        return rows[0] if rows else None

    async def fetch_value(self, statement: ClauseElement) -> Any:
        await self.execute(statement)
        row = await self._cursor.fetchone()
        return row[0] if row else None


class Database:
    """The process's aiopg pool, handed to handlers and services through the app settings."""

    def __init__(self, pool: aiopg.Pool, dsn: str) -> None:
        self._pool = pool
        self.dsn = dsn

    @classmethod
    async def connect(cls, dsn: str, size: int = 10, timeout: float = 10.0) -> Database:
        try:
            pool = await aiopg.create_pool(
                dsn,
                minsize=1,
                maxsize=size,
                timeout=timeout,
                enable_hstore=False,
                enable_uuid=False,
            )
        except (psycopg2.Error, OSError) as error:
            raise DatabaseUnavailable(_first_line(error)) from None
        return cls(pool, dsn)

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as conn, conn.cursor() as cursor:
            yield Connection(cursor)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """All statements on the yielded connection commit together, or not at all."""
        async with self._pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute("BEGIN")
            try:
                yield Connection(cursor)
            except BaseException:
                if not conn.closed:
                    await cursor.execute("ROLLBACK")
                raise
            await cursor.execute("COMMIT")

    async def fetch_all(self, statement: ClauseElement) -> list[Row]:
        async with self.connection() as conn:
            return await conn.fetch_all(statement)

    async def fetch_one(self, statement: ClauseElement) -> Row | None:
        async with self.connection() as conn:
            return await conn.fetch_one(statement)

    async def fetch_value(self, statement: ClauseElement) -> Any:
        async with self.connection() as conn:
            return await conn.fetch_value(statement)

    async def execute(self, statement: ClauseElement) -> int:
        async with self.connection() as conn:
            return await conn.execute(statement)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
