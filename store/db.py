"""Run SQLAlchemy Core statements on an aiopg pool.

SQLAlchemy only builds and compiles the statements (for the psycopg2 dialect); aiopg sends
them with their parameters, and psycopg2 adapts the values. Nothing is ever formatted into
the SQL text.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiopg
import orjson
import psycopg2
import psycopg2.extras
from psycopg2.extras import Json
from sqlalchemy.dialects.postgresql import psycopg2 as pg_dialect
from sqlalchemy.engine import Compiled
from sqlalchemy.sql import ClauseElement

_DIALECT = pg_dialect.dialect()

# JSON columns come back parsed by orjson (psycopg2's default is the slower stdlib json).
psycopg2.extras.register_default_json(globally=True, loads=orjson.loads)
psycopg2.extras.register_default_jsonb(globally=True, loads=orjson.loads)

Row = dict[str, Any]


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached."""


Params = Mapping[str, Any] | None


def _compile(statement: ClauseElement) -> Compiled:
    return statement.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})


@functools.cache
def _template(statement: ClauseElement) -> tuple[str, dict[str, Any]]:
    """A template's SQL and the values it binds itself (its literals), compiled once.

    Templates are module-level constants, so this cache stays as small as the code using it.
    """
    compiled = _compile(statement)
    literals = {
        name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
    }
    return compiled.string, literals


def compile_statement(statement: ClauseElement, params: Params = None) -> tuple[str, dict]:
    """SQL text with `%(name)s` placeholders, and the values to bind to them.

    Without `params`, the values are the ones bound into the statement, compiled anew. With
    `params`, the statement is a template (a module-level constant whose values are
    `bindparam()`s) compiled once, so hot paths skip SQLAlchemy's compiler; `params` fills it.
    """
    if params is None:
        compiled = _compile(statement)
        sql, values = compiled.string, compiled.params
    else:
        sql, literals = _template(statement)
        values = {**literals, **params}
    adapted = {
        name: Json(value, dumps=_dumps) if isinstance(value, (dict, list)) else value
        for name, value in values.items()
    }
    return sql, adapted


class Connection:
    """One pooled connection; statements run in autocommit unless inside `transaction()`."""

    def __init__(self, cursor: aiopg.Cursor) -> None:
        self._cursor = cursor

    async def execute(self, statement: ClauseElement, params: Params = None) -> int:
        """Run a statement; returns the number of rows it touched."""
        sql, values = compile_statement(statement, params)
        await self._cursor.execute(sql, values)
        return self._cursor.rowcount

    async def fetch_all(self, statement: ClauseElement, params: Params = None) -> list[Row]:
        await self.execute(statement, params)
        names = [column.name for column in self._cursor.description]
        return [dict(zip(names, values, strict=True)) for values in await self._cursor.fetchall()]

    async def fetch_one(self, statement: ClauseElement, params: Params = None) -> Row | None:
        rows = await self.fetch_all(statement, params)
        return rows[0] if rows else None

    async def fetch_value(self, statement: ClauseElement, params: Params = None) -> Any:
        await self.execute(statement, params)
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
                enable_json=False,
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

    async def fetch_all(self, statement: ClauseElement, params: Params = None) -> list[Row]:
        async with self.connection() as conn:
            return await conn.fetch_all(statement, params)

    async def fetch_one(self, statement: ClauseElement, params: Params = None) -> Row | None:
        async with self.connection() as conn:
            return await conn.fetch_one(statement, params)

    async def fetch_value(self, statement: ClauseElement, params: Params = None) -> Any:
        async with self.connection() as conn:
            return await conn.fetch_value(statement, params)

    async def execute(self, statement: ClauseElement, params: Params = None) -> int:
        async with self.connection() as conn:
            return await conn.execute(statement, params)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
