"""Multi-row inserts without SQLAlchemy's per-row parameter processing (issue 15).

``conn.execute(table.insert(), rows)`` builds and processes one parameter set per row in
Python, and on PostgreSQL asyncpg's ``executemany`` then sends one Bind/Execute per row, each
row a statement of its own on the server. For the retention sweep's thousands of jobs and
audit events per batch that was most of the batch's time (docs/performance.md, "Retention
sweep"). ``insert_rows`` writes the same rows with:

- PostgreSQL: one ``INSERT … SELECT … FROM unnest($1, $2, …)`` with one array per column
  whose values differ between rows, and one plain parameter per column that holds the same
  value in every row (most of a sweep's columns: its type, actor, time, empty results…):
  one Bind whatever the number of rows, one set-based insert on the server, and asyncpg
  encodes only the arrays element by element;
- SQLite: one ``executemany`` of plain tuples (sqlite3 has no bulk path cheaper than that).

Values go through each column's own bind processor (``UtcDateTime``'s naive UTC, JSON's
serializer — ``None`` in a JSON column is stored as JSON ``null``, as SQLAlchemy stores it),
so the rows stored are the rows ``table.insert()`` would have stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from vpsnap.store.driver_sql import driver_sql

_Processor = Callable[[Any], Any]

# Bind processors by (dialect, table, columns), statements by the same and which columns are
# the same in every row: built once, like the hot-path statements of store.sql.
_processors: dict[tuple[str, str, tuple[str, ...]], tuple[_Processor | None, ...]] = {}
_statements: dict[tuple[str, str, tuple[str, ...], tuple[bool, ...]], str] = {}


async def insert_rows(
    conn: AsyncConnection, table: sa.Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert ``rows`` (each a mapping of column name to Python value, all with the keys of the
    first row) into ``table`` in one statement on PostgreSQL and one ``executemany`` on
    SQLite, in the caller's transaction. Raises what the database raises (e.g.
    ``IntegrityError`` on a duplicate key: nothing of the statement is written)."""
    if not rows:
        return
    names = tuple(rows[0])
    dialect = conn.dialect
    key = (dialect.name, table.name, names)
    processors = _processors.get(key)
    if processors is None:
        processors = _processors.setdefault(key, _bind_processors(table, names, dialect))
    # Per column: the one value of every row, or the list of the rows' values.
    columns: list[Any] = []
    same: list[bool] = []
    for name, processor in zip(names, processors, strict=True):
        raw = [row[name] for row in rows]
        first = raw[0]
        if len(set(map(id, raw))) == 1:
            # The same object in every row (the batch's time, an actor, None…): processed
            # once; no other check can tell it apart from itself.
            columns.append(first if processor is None else processor(first))
            same.append(True)
            continue
        values = _processed(raw, processor)
        first = values[0]
        # Compared once processed (exact types: JSON text, naive datetimes, str, int), so that
        # values Python finds equal but stores differently (1 and True in JSON) stay apart.
        constant = values.count(first) == len(values) and all(
            type(value) is type(first) for value in values
        )
        columns.append(first if constant else values)
        same.append(constant)
    if len(rows) > 1 and all(same):
        # Identical rows (a table without a key): one array says how many.
        columns[0], same[0] = [columns[0]] * len(rows), False
    statement = _statements.get((*key, tuple(same)))
    if statement is None:
        statement = _statements.setdefault(
            (*key, tuple(same)), _statement(table, names, tuple(same), dialect)
        )
    if dialect.name == "postgresql":
        await conn.exec_driver_sql(statement, tuple(columns))
    else:
        count = len(rows)
        cells = [repeat(c, count) if s else c for c, s in zip(columns, same, strict=True)]
        await driver_sql(conn, statement, list(zip(*cells, strict=True)))


def _processed(values: list[Any], processor: _Processor | None) -> list[Any]:
    if processor is None:
        return values
    # Most rows share None in the optional columns (a JSON column's None becomes 'null'): one
    # call for all of them.
    none = processor(None)
    return [none if value is None else processor(value) for value in values]


def _bind_processors(
    table: sa.Table, names: tuple[str, ...], dialect: Dialect
) -> tuple[_Processor | None, ...]:
    return tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)


def _statement(
    table: sa.Table, names: tuple[str, ...], same: tuple[bool, ...], dialect: Dialect
) -> str:
    # Only identifiers of our own tables (quoted by the dialect), types and placeholders go into
    # the text: every value is a bound parameter (hence the noqa S608 below).
    quote = dialect.identifier_preparer.quote
    target = f"{dialect.identifier_preparer.format_table(table)} ({', '.join(map(quote, names))})"
    if dialect.name != "postgresql":
        # sqlite3's paramstyle (qmark): the placeholders are positional.
        return f"INSERT INTO {target} VALUES ({', '.join('?' for _ in names)})"  # noqa: S608
    arrays: list[str] = []
    selected: list[str] = []
    for i, (name, constant) in enumerate(zip(names, same, strict=True)):
        column_type = table.c[name].type
        sql_type = column_type.compile(dialect=dialect)
        # A JSON column's processor made text; json[] would need asyncpg's json codec per
        # element, and a json parameter asyncpg's json codec: both go as text, cast here.
        sent_as = "text" if isinstance(column_type, sa.JSON) else sql_type
        if constant:
            value = f"${i + 1}::{sent_as}"
        else:
            arrays.append(f"${i + 1}::{sent_as}[]")
            value = f"u.c{len(arrays) - 1}"
        selected.append(f"{value}::{sql_type}" if sent_as != sql_type else value)
    if not arrays:
        # One row: a plain VALUES row.
        return f"INSERT INTO {target} VALUES ({', '.join(selected)})"  # noqa: S608
    aliases = ", ".join(f"c{i}" for i in range(len(arrays)))
    return (
        f"INSERT INTO {target} SELECT {', '.join(selected)} "  # noqa: S608
        f"FROM unnest({', '.join(arrays)}) AS u({aliases})"
    )
