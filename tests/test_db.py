"""The statement runner: templates compiled once, prepared once per connection."""

import pytest
from sqlalchemy import Text, bindparam, column, func, literal, literal_column, select, table

from store.db import Database

# A template with a parameter, and a `%` in its SQL (escaped as `%%` when compiled).
TEMPLATE = select(
    func.concat(bindparam("word", type_=Text), literal_column("' 100%'")).label("value")
)
NO_PARAMETERS = select(literal("constant").label("value"))
PREPARED = table("pg_prepared_statements", column("name"), column("statement"))


@pytest.mark.gen_test
async def test_templates_are_prepared_once_per_connection_and_run_by_name(database: Database):
    async with database.connection() as conn:
        for word in ("first", "second"):
            assert await conn.fetch_value(TEMPLATE, {"word": word}) == f"{word} 100%"
        assert await conn.fetch_value(NO_PARAMETERS, {}) == "constant"
        prepared = await conn.fetch_all(
            select(PREPARED.c.statement).where(PREPARED.c.name.like("matcha_%"))
        )
    assert len(prepared) == 2
    assert any("$1" in row["statement"] and "100%'" in row["statement"] for row in prepared)


@pytest.mark.gen_test
async def test_a_template_prepared_in_a_rolled_back_transaction_still_runs(database: Database):
    with pytest.raises(ZeroDivisionError):
        async with database.transaction() as conn:
            assert await conn.fetch_value(TEMPLATE, {"word": "inside"}) == "inside 100%"
            raise ZeroDivisionError
    async with database.connection() as conn:
        assert await conn.fetch_value(TEMPLATE, {"word": "after"}) == "after 100%"
