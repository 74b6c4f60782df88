"""``store.driver_sql``: on SQLite inside an inline write transaction a statement runs straight
on the ``sqlite3`` connection (no SQLAlchemy execution, no greenlet, no thread hop), with the
errors and the transaction ``exec_driver_sql`` would give; everywhere else it is
``exec_driver_sql``."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from vpsnap.store.driver_sql import driver_sql
from vpsnap.store.sql import SqlStore


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    async with store.transaction() as tx:
        await tx.conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
    yield store
    await store.dispose()


def _sqlalchemy_statements(conn: AsyncConnection) -> list[str]:
    """Statements SQLAlchemy executes on ``conn``'s engine from now on (its cursor events)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    sa.event.listen(conn.sync_engine, "before_cursor_execute", record)
    return seen


async def _values(store: SqlStore) -> list[str]:
    async with store.transaction(read_only=True) as tx:
        return list((await tx.conn.execute(sa.text("SELECT v FROM t ORDER BY v"))).scalars())


async def test_inside_a_write_transaction_it_runs_inline_on_the_loop_thread(
    sqlite_store: SqlStore,
) -> None:
    threads: list[str] = []
    async with sqlite_store.transaction() as tx:
        raw = await tx.conn.get_raw_connection()
        raw.driver_connection._conn.set_trace_callback(  # type: ignore[union-attr]
            lambda _sql: threads.append(threading.current_thread().name)
        )
        through_sqlalchemy = _sqlalchemy_statements(tx.conn)
        one = await driver_sql(tx.conn, "INSERT INTO t (v) VALUES (?)", ("a",))
        many = await driver_sql(tx.conn, "INSERT INTO t (v) VALUES (?)", [("b",), ("c",)])
        rows = await driver_sql(tx.conn, "SELECT v FROM t WHERE v > ? ORDER BY v", ("a",))
        raw.driver_connection._conn.set_trace_callback(None)  # type: ignore[union-attr]

    assert (one.rowcount, many.rowcount) == (1, 2)
    assert list(rows.all()) == [("b",), ("c",)]
    assert through_sqlalchemy == []
    me = threading.current_thread().name
    assert threads and all(name == me for name in threads), threads
    assert await _values(sqlite_store) == ["a", "b", "c"]


async def test_errors_are_sqlalchemys_and_the_transaction_rolls_back_whole(
    sqlite_store: SqlStore,
) -> None:
    with pytest.raises(sa.exc.IntegrityError) as raised:
        async with sqlite_store.transaction() as tx:
            await driver_sql(tx.conn, "INSERT INTO t (v) VALUES (?)", ("x",))
            await driver_sql(tx.conn, "INSERT INTO t (v) VALUES (?)", ("x",))
    assert raised.value.statement == "INSERT INTO t (v) VALUES (?)"
    assert await _values(sqlite_store) == []  # the first INSERT went with the transaction

    # A caller that handles the error goes on in the same transaction (a savepoint's way).
    async with sqlite_store.transaction() as tx:
        await driver_sql(tx.conn, "INSERT INTO t (v) VALUES (?)", ("y",))
        with pytest.raises(sa.exc.IntegrityError):
            async with tx.conn.begin_nested():
                await driver_sql(tx.conn, "INSERT INTO t (v) VALUES (?)", ("y",))
        await driver_sql(tx.conn, "INSERT INTO t (v) VALUES (?)", ("z",))
    assert await _values(sqlite_store) == ["y", "z"]


async def test_outside_an_inline_write_transaction_it_is_exec_driver_sql(
    sqlite_store: SqlStore,
) -> None:
    # A bulk transaction keeps its statements in aiosqlite's thread, a read transaction has no
    # write lock: both go through SQLAlchemy.
    async with sqlite_store.transaction(bulk=True) as tx:
        seen = _sqlalchemy_statements(tx.conn)
        await driver_sql(tx.conn, "INSERT INTO t (v) VALUES (?)", ("bulk",))
        assert seen == ["INSERT INTO t (v) VALUES (?)"]
    async with sqlite_store.transaction(read_only=True) as tx:
        seen = _sqlalchemy_statements(tx.conn)
        assert list((await driver_sql(tx.conn, "SELECT v FROM t", ())).all()) == [("bulk",)]
        assert seen == ["SELECT v FROM t"]


async def test_on_the_store_of_either_database_the_same_results(store: SqlStore) -> None:
    # tests/conftest.py's store: SQLite and PostgreSQL (exec_driver_sql there).
    placeholder = "$1" if store.is_postgres else "?"
    async with store.transaction() as tx:
        await tx.conn.execute(sa.text("CREATE TABLE driver_probe (v TEXT PRIMARY KEY)"))
    try:
        async with store.transaction() as tx:
            done = await driver_sql(
                tx.conn, f"INSERT INTO driver_probe (v) VALUES ({placeholder})", ("p",)
            )
            assert done.rowcount == 1
            with pytest.raises(sa.exc.IntegrityError):
                async with tx.conn.begin_nested():
                    await driver_sql(
                        tx.conn, f"INSERT INTO driver_probe (v) VALUES ({placeholder})", ("p",)
                    )
            found = await driver_sql(tx.conn, "SELECT v FROM driver_probe", ())
            assert [tuple(row) for row in found.all()] == [("p",)]
    finally:
        async with store.transaction() as tx:
            await tx.conn.execute(sa.text("DROP TABLE driver_probe"))
