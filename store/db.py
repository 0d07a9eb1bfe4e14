"""Run SQLAlchemy Core statements on an aiopg pool.

SQLAlchemy only builds and compiles the statements (for the psycopg2 dialect); aiopg sends
them with their parameters, and psycopg2 adapts the values. Nothing is ever formatted into
the SQL text.

Templates (module-level statements whose values are `bindparam()`s, run with `params`) are
the hot paths: each is compiled once per process and prepared once per connection
(`PREPARE`), so PostgreSQL parses and plans it once too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import re
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiopg
import orjson
import psycopg2
import psycopg2.errors
import psycopg2.extras
from psycopg2.extras import Json
from sqlalchemy.dialects.postgresql import psycopg2 as pg_dialect
from sqlalchemy.engine import Compiled
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import NullType

_DIALECT = pg_dialect.dialect()

# JSON columns come back parsed by orjson (psycopg2's default is the slower stdlib json).
psycopg2.extras.register_default_json(globally=True, loads=orjson.loads)
psycopg2.extras.register_default_jsonb(globally=True, loads=orjson.loads)

Row = dict[str, Any]


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached."""


Params = Mapping[str, Any] | None

# Seconds a connection may take to open, unless the URL sets its own `connect_timeout`: a
# server that accepts connections but never answers must not hang the start.
CONNECT_TIMEOUT = 10


def with_connect_timeout(dsn: str) -> str:
    """`dsn` with libpq's `connect_timeout` (CONNECT_TIMEOUT unless it has one).

    libpq applies it to blocking connects only (psycopg2.connect); aiopg's asynchronous ones
    are bounded by their own `timeout`.
    """
    if "connect_timeout" in psycopg2.extensions.parse_dsn(dsn):
        return dsn
    return psycopg2.extensions.make_dsn(dsn, connect_timeout=CONNECT_TIMEOUT)


def _compile(statement: ClauseElement) -> Compiled:
    return statement.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})


@dataclasses.dataclass(frozen=True)
class _Template:
    # The values the template binds itself.
    literals: dict[str, Any]
    name: str
    # `PREPARE <name>(<types>) AS <sql with $n>`, and `EXECUTE <name>(%(a)s, ...)`.
    prepare: str
    execute: str


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_TEMPLATE_NUMBERS = itertools.count()


@functools.cache
def _template(statement: ClauseElement) -> _Template:
    """A template compiled once, and its statements to prepare and to run it by name.

    Templates are module-level constants, so this cache stays as small as the code using it.
    """
    compiled = _compile(statement)
    literals = {
        name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
    }
    names = list(dict.fromkeys(_PLACEHOLDER.findall(compiled.string)))
    position = {name: index for index, name in enumerate(names, start=1)}
    # PREPARE runs without parameters, so its `%` are not escaped.
    body = _PLACEHOLDER.sub(lambda match: f"${position[match[1]]}", compiled.string)
    body = body.replace("%%", "%")
    types = ", ".join(_parameter_type(compiled.binds[name]) for name in names)
    arguments = ", ".join(f"%({name})s" for name in names)
    statement_name = f"matcha_{next(_TEMPLATE_NUMBERS)}"
    return _Template(
        literals=literals,
        name=statement_name,
        prepare=f"PREPARE {statement_name}{f'({types})' if names else ''} AS {body}",
        execute=f"EXECUTE {statement_name}{f'({arguments})' if names else ''}",
    )


def _parameter_type(bind: BindParameter) -> str:
    """The SQL type of a parameter; `unknown` (PostgreSQL infers it) where SQLAlchemy has none."""
    return "unknown" if isinstance(bind.type, NullType) else bind.type.compile(dialect=_DIALECT)


def compile_statement(statement: ClauseElement) -> tuple[str, dict]:
    """A one-off statement's SQL text with `%(name)s` placeholders, and the values it binds."""
    compiled = _compile(statement)
    return compiled.string, _adapted(compiled.params)


def _adapted(values: dict[str, Any]) -> dict[str, Any]:
    return {
        name: Json(value, dumps=_dumps) if isinstance(value, (dict, list)) else value
        for name, value in values.items()
    }


class Connection:
    """One pooled connection; statements run in autocommit unless inside `transaction()`.

    `prepared` holds the names of the templates prepared on this server session.
    """

    def __init__(self, cursor: aiopg.Cursor, prepared: set[str]) -> None:
        self._cursor = cursor
        self._prepared = prepared

    async def execute(self, statement: ClauseElement, params: Params = None) -> int:
        """Run a statement; returns the number of rows it touched."""
        if params is None:
            sql, values = compile_statement(statement)
        else:  # a template
            template = _template(statement)
            if template.name not in self._prepared:
                await self._prepare(template)
            sql, values = template.execute, _adapted({**template.literals, **params})
        await self._cursor.execute(sql, values)
        return self._cursor.rowcount

    async def _prepare(self, template: _Template) -> None:
        # Already there when an earlier call was cancelled before it could note it.
        with contextlib.suppress(psycopg2.errors.DuplicatePreparedStatement):
            await self._cursor.execute(template.prepare)
        self._prepared.add(template.name)

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
        # Per server session (a pooled connection lives as long as its session).
        self._prepared: weakref.WeakKeyDictionary[aiopg.Connection, set[str]] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    async def connect(cls, dsn: str, size: int = 10, timeout: float = 10.0) -> Database:
        """Opens the pool; `timeout` bounds each connect and, by default, each statement."""
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
        except TimeoutError:
            raise DatabaseUnavailable(f"no answer within {timeout:g} s") from None
        except (psycopg2.Error, OSError) as error:
            raise DatabaseUnavailable(first_line(error)) from None
        return cls(pool, dsn)

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as conn, conn.cursor() as cursor:
            yield self._wrap(conn, cursor)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """All statements on the yielded connection commit together, or not at all."""
        async with self._pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute("BEGIN")
            try:
                yield self._wrap(conn, cursor)
            except BaseException:
                if not conn.closed:
                    await cursor.execute("ROLLBACK")
                raise
            await cursor.execute("COMMIT")

    def _wrap(self, conn: aiopg.Connection, cursor: aiopg.Cursor) -> Connection:
        return Connection(cursor, self._prepared.setdefault(conn, set()))

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


def first_line(error: BaseException) -> str:
    """An error's first line of text (or its type's name): start-up failures say one line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
