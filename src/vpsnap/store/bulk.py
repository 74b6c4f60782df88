"""Multi-row inserts without SQLAlchemy's per-row parameter processing (issue 15).

``conn.execute(table.insert(), rows)`` builds and processes one parameter set per row in
Python, and on PostgreSQL asyncpg's ``executemany`` then sends one Bind/Execute per row, each
row a statement of its own on the server. For the retention sweep's thousands of jobs and
audit events per batch that was most of the batch's time (docs/performance.md, "Retention
sweep"). ``insert_rows`` writes the same rows with:

- PostgreSQL: one ``INSERT … SELECT … FROM unnest($1, $2, …)`` with one array per column:
  one Bind whatever the number of rows, one set-based insert on the server;
- SQLite: one ``executemany`` of plain tuples (sqlite3 has no bulk path cheaper than that).

Values go through each column's own bind processor (``UtcDateTime``'s naive UTC, JSON's
serializer — ``None`` in a JSON column is stored as JSON ``null``, as SQLAlchemy stores it),
so the rows stored are the rows ``table.insert()`` would have stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

_Processor = Callable[[Any], Any]
_Prepared = tuple[str, tuple[_Processor | None, ...]]

# Statement and bind processors by (dialect, table, columns): built once, like the hot-path
# statements of store.sql.
_prepared: dict[tuple[str, str, tuple[str, ...]], _Prepared] = {}


async def insert_rows(
    conn: AsyncConnection, table: sa.Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert ``rows`` (each a mapping of column name to Python value, all with the keys of the
    first row) into ``table`` in one statement on PostgreSQL and one
    ``executemany`` on SQLite, in the caller's transaction. Raises what the database raises
    (e.g. ``IntegrityError`` on a duplicate key: nothing of the statement is written)."""
    if not rows:
        return
    names = tuple(rows[0])
    dialect = conn.dialect
    key = (dialect.name, table.name, names)
    prepared = _prepared.get(key)
    if prepared is None:
        prepared = _prepared.setdefault(key, _prepare(table, names, dialect))
    statement, processors = prepared
    columns = [
        _processed([row[name] for row in rows], processor)
        for name, processor in zip(names, processors, strict=True)
    ]
    if dialect.name == "postgresql":
        await conn.exec_driver_sql(statement, tuple(columns))
    else:
        await conn.exec_driver_sql(statement, list(zip(*columns, strict=True)))


def _processed(values: list[Any], processor: _Processor | None) -> list[Any]:
    if processor is None:
        return values
    # Most rows share None in the optional columns (a JSON column's None becomes 'null'): one
    # call for all of them.
    none = processor(None)
    return [none if value is None else processor(value) for value in values]


def _prepare(table: sa.Table, names: tuple[str, ...], dialect: Dialect) -> _Prepared:
    processors = tuple(
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    return _statement(table, names, dialect), processors


def _statement(table: sa.Table, names: tuple[str, ...], dialect: Dialect) -> str:
    # Only identifiers of our own tables (quoted by the dialect) and placeholders go into the
    # text: every value is a bound parameter (hence the noqa S608 below).
    quote = dialect.identifier_preparer.quote
    target = f"{dialect.identifier_preparer.format_table(table)} ({', '.join(map(quote, names))})"
    if dialect.name != "postgresql":
        # sqlite3's paramstyle (qmark): the placeholders are positional.
        return f"INSERT INTO {target} VALUES ({', '.join('?' for _ in names)})"  # noqa: S608
    arrays, selected = [], []
    for i, name in enumerate(names):
        sql_type = table.c[name].type.compile(dialect=dialect)
        if isinstance(table.c[name].type, sa.JSON):
            # The processor made JSON text; json[] would need asyncpg's json codec per element.
            arrays.append(f"${i + 1}::text[]")
            selected.append(f"u.c{i}::{sql_type}")
        else:
            arrays.append(f"${i + 1}::{sql_type}[]")
            selected.append(f"u.c{i}")
    aliases = ", ".join(f"c{i}" for i in range(len(names)))
    return (
        f"INSERT INTO {target} SELECT {', '.join(selected)} "  # noqa: S608
        f"FROM unnest({', '.join(arrays)}) AS u({aliases})"
    )
