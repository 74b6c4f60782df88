"""Statements run on the DB-API cursor, below SQLAlchemy's execution and result layers
(docs/performance.md, "Reads" and "The job path, fourth round"): ``RawSelect`` for reads of
whole rows decoded here, ``RawWrite`` for the hot writes, both compiled by SQLAlchemy once per
dialect and executed through ``store.driver_sql``. ``tests/store/test_raw_reads.py`` and
``tests/services/test_job_path_statements.py`` check that they read and write what SQLAlchemy's
``execute`` would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from vpsnap.store.driver_sql import DriverResult, driver_sql
from vpsnap.store.tables import UtcDateTime


class RawSelect:
    """A ``SELECT`` of every column of one table (or of several, joined, in the order given),
    run on the DB-API cursor (``exec_driver_sql``) with the rows decoded here instead of by
    SQLAlchemy's result.

    For the reads of every list request (docs/performance.md, "Reads"): SQLAlchemy's
    execution context and result processing cost about as much as the rest of the store work
    (0.27 of 0.54 ms for a page of 21 VPSes on SQLite). The SQL is compiled by SQLAlchemy, once
    per dialect; the decoding (``_RAW_DECODERS``) gives what SQLAlchemy's result would give for
    the column types used here (tests/store/test_raw_reads.py compares the two on both
    databases), so ``_vps`` and ``_snapshot`` take either.
    """

    def __init__(self, query: sa.Select[Any], *tables: sa.Table) -> None:
        self.query = query
        # The column names of the first table (``records``' keys).
        self.names = tuple(tables[0].c.keys()) if tables else ()
        self._parts: list[tuple[int, int, dict[str, tuple[int, ...]]]] = []
        start = 0
        for table in tables:
            self._parts.append((start, start + len(table.c), _column_kinds(table)))
            start += len(table.c)
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    def sql(self, dialect: sa.Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        """The statement for ``dialect``, the names of its parameters in order, and the values
        of those the statement carries itself (a literal, SQLite's ``OFFSET`` after a bound
        ``LIMIT``)."""
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.query.compile(dialect=dialect)
            if not compiled.positional or compiled.positiontup is None:
                raise TypeError(f"{dialect.name}: a positional paramstyle is expected")
            fixed = {
                name: bind.effective_value
                for name, bind in compiled.binds.items()
                if not bind.required
            }
            found = (str(compiled), tuple(compiled.positiontup), fixed)
            self._compiled[dialect.name] = found
        return found

    def decode(
        self, dialect: sa.Dialect, rows: Sequence[Sequence[Any]], part: int = 0
    ) -> list[list[Any]]:
        """The columns of the ``part``-th table of driver rows, as SQLAlchemy's result would
        give them (aware UTC timestamps, JSON as Python values, booleans as ``bool``)."""
        timestamp, from_json, boolean = _RAW_DECODERS[dialect.name]
        start, stop, kinds = self._parts[part]
        decoded = []
        for raw in rows:
            row = list(raw[start:stop])
            for i in kinds["timestamp"]:
                row[i] = timestamp(row[i])
            for i in kinds["json"]:
                row[i] = from_json(row[i])
            for i in kinds["boolean"]:
                row[i] = boolean(row[i])
            decoded.append(row)
        return decoded

    def records(self, dialect: sa.Dialect, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """The rows of the first table decoded, as mappings of column name to value (what
        SQLAlchemy's ``mappings()`` would give)."""
        return [dict(zip(self.names, row, strict=True)) for row in self.decode(dialect, rows)]


class RawWrite:
    """An ``INSERT``/``UPDATE``/``DELETE`` built once, compiled once per dialect, and run on the
    DB-API cursor (``exec_driver_sql``) with its parameters through their types' own bind
    processors: the statement and the values SQLAlchemy's ``execute`` would send, without its
    per-call execution context, parameter construction and result set-up (docs/performance.md,
    "The job path, fourth round": the write transactions of every job).

    Parameters are given by their bind names; those the statement carries itself (a literal
    in a ``WHERE``) need not be. ``tests/services/test_job_path_statements.py``
    (``test_a_raw_write_writes_what_sqlalchemy_writes``) checks that the rows written are those
    of ``conn.execute`` on both databases.
    """

    def __init__(self, statement: sa.Insert | sa.Update | sa.Delete) -> None:
        self.statement = statement
        self._compiled: dict[
            str, tuple[str, tuple[tuple[str, Callable[[Any], Any] | None, Any], ...]]
        ] = {}

    def _for(
        self, dialect: sa.Dialect
    ) -> tuple[str, tuple[tuple[str, Callable[[Any], Any] | None, Any], ...]]:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            if not compiled.positional or compiled.positiontup is None:
                raise TypeError(f"{dialect.name}: a positional paramstyle is expected")
            binds = []
            for name in compiled.positiontup:
                bind = compiled.binds[name]
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                # A value the statement carries itself is taken from it; a required one that
                # the caller did not give raises KeyError in run().
                fixed = _REQUIRED if bind.required else bind.effective_value
                binds.append((name, processor, fixed))
            found = (str(compiled), tuple(binds))
            self._compiled[dialect.name] = found
        return found

    async def run(self, conn: AsyncConnection, params: Mapping[str, Any]) -> DriverResult:
        """Execute with ``params`` (bind name to Python value) in ``conn``'s transaction
        (``store.driver_sql``); raises what the database raises, wrapped by SQLAlchemy as
        ``execute`` would."""
        sql, binds = self._for(conn.dialect)
        values = []
        for name, processor, fixed in binds:
            value = params[name] if fixed is _REQUIRED else params.get(name, fixed)
            values.append(value if processor is None else processor(value))
        return await driver_sql(conn, sql, tuple(values))


_REQUIRED: Any = object()


def _column_kinds(table: sa.Table) -> dict[str, tuple[int, ...]]:
    """Positions of ``table``'s columns that need decoding, by kind."""
    kinds: dict[str, list[int]] = {"timestamp": [], "json": [], "boolean": []}
    for i, column in enumerate(table.c):
        if isinstance(column.type, UtcDateTime):
            kinds["timestamp"].append(i)
        elif isinstance(column.type, sa.JSON):
            kinds["json"].append(i)
        elif isinstance(column.type, sa.Boolean):
            kinds["boolean"].append(i)
        elif not isinstance(column.type, sa.String | sa.Integer):
            raise TypeError(f"{column} has a type RawSelect does not decode")
    return {kind: tuple(positions) for kind, positions in kinds.items()}


def _text_timestamp(value: str | None) -> datetime | None:
    # SQLite stores UtcDateTime as naive UTC text, "2026-04-27 12:34:56.000123". Parsed with
    # the offset appended: the same aware datetime (tzinfo is datetime.UTC) as parsing and
    # then .replace(tzinfo=UTC), at a fifth of the cost (replace's keyword parsing is most of
    # it; 42 timestamps a list page). Text that does not parse so (one with an offset of its
    # own) takes the old way, as does a bare date: Python 3.11 drops the offset after one.
    if value is None:
        return None
    try:
        found = datetime.fromisoformat(value + "+00:00")
    except ValueError:
        found = None
    if found is None or found.tzinfo is not UTC:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return found


def _naive_timestamp(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


# The decoder's C scanner (typeshed does not declare the attribute).
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _text_json(value: str | None) -> Any:
    # SQLAlchemy's JSON type stores Python None as the JSON text "null" (most of a row's JSON
    # columns): not worth a parse.
    if value is None or value == "null":
        return None
    # json.loads' C scanner without its wrapper (two whitespace matches per call): SQLAlchemy
    # writes json.dumps' output, one value and nothing around it; anything else goes the
    # long way, with json.loads' errors.
    try:
        found, end = _scan_json(value, 0)
    except StopIteration:
        return json.loads(value)
    return found if end == len(value) else json.loads(value)


def _int_boolean(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _as_is(value: Any) -> Any:
    return value


# Per dialect: timestamp, JSON and boolean decoders of a driver's value. asyncpg returns naive
# datetimes, and JSON already decoded (SQLAlchemy's asyncpg dialect sets the codec on connect).
_RAW_DECODERS: dict[
    str, tuple[Callable[[Any], Any], Callable[[Any], Any], Callable[[Any], Any]]
] = {
    "sqlite": (_text_timestamp, _text_json, _int_boolean),
    "postgresql": (_naive_timestamp, _as_is, _as_is),
}


async def fetch_rows(
    conn: AsyncConnection,
    query: RawSelect,
    params: Mapping[str, Any],
    limit: int | None = None,
) -> Sequence[Sequence[Any]]:
    """The rows of ``query`` in ``conn``'s transaction, as the driver gives them (at most
    ``limit``); ``params`` maps bind names to values."""
    sql, names, fixed = query.sql(conn.dialect)
    if limit is not None:
        sql = f"{sql} LIMIT {int(limit)}"
    values = tuple(params[name] if name in params else fixed[name] for name in names)
    return (await driver_sql(conn, sql, values)).all()
