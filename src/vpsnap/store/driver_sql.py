"""SQL text with DB-API parameters in the caller's write transaction, by the shortest way the
connection allows (docs/performance.md, "The job path, fifth round").

``AsyncConnection.exec_driver_sql`` costs ~0.1 ms of CPU per statement besides the database's
own work: a greenlet started and finished for the call (on Python 3.11 each one maps and unmaps
a frame stack chunk), SQLAlchemy's execution context, events and result wrapping, and the async
adapter around the cursor. The statements of the hot paths (``SqlTransaction``'s prebuilt
writes and raw reads, ``bulk.insert_rows``) are SQL text already. On SQLite, inside a write
transaction whose calls run inline (``InlineWriteConnection``), they run straight on the
``sqlite3`` connection instead: the same statement on the same connection in the same
transaction, with the same errors (SQLAlchemy's ``DBAPIError.instance`` wrapping of the
``sqlite3`` error, as ``exec_driver_sql`` raises it). Everything else — PostgreSQL, a bulk
transaction whose statements stay in aiosqlite's thread, a call still running there — takes
``exec_driver_sql``.

What this way does not do: SQLAlchemy's ``before_cursor_execute``/``after_cursor_execute``
events do not fire for these statements (vpsnap registers none; a test or a benchmark that
counts statements with them counts the others only).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from vpsnap.store.sqlite_connection import InlineWriteConnection


class DriverResult(Protocol):
    """What callers use of a statement's result (``CursorResult`` has both)."""

    @property
    def rowcount(self) -> int: ...

    def all(self) -> Sequence[Any]: ...


class _InlineResult:
    __slots__ = ("_rows", "rowcount")

    def __init__(self, rowcount: int, rows: list[tuple[Any, ...]]) -> None:
        self.rowcount = rowcount
        self._rows = rows

    def all(self) -> Sequence[Any]:
        return self._rows


def _inline_connection(conn: AsyncConnection) -> InlineWriteConnection | None:
    sync = conn.sync_connection
    if sync is None or sync.invalidated or sync.closed:
        return None
    driver = sync.connection.driver_connection
    return driver if isinstance(driver, InlineWriteConnection) else None


async def driver_sql(
    conn: AsyncConnection,
    sql: str,
    parameters: tuple[Any, ...] | list[tuple[Any, ...]],
) -> DriverResult:
    """Execute ``sql`` (the dialect's paramstyle) with ``parameters`` — one tuple, or a list
    of tuples for an ``executemany`` — in ``conn``'s transaction; raises SQLAlchemy's
    ``DBAPIError`` subclasses as ``exec_driver_sql`` does."""
    inline = _inline_connection(conn)
    if inline is not None:
        try:
            done = inline.execute_inline(sql, parameters, many=isinstance(parameters, list))
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, parameters, exc, sqlite3.Error) from exc
        if done is not None:
            return _InlineResult(*done)
    result: sa.CursorResult[Any] = await conn.exec_driver_sql(sql, parameters)
    return result
