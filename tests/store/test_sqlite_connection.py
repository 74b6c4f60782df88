"""The SQLite engine's connection: write transactions inline, everything else in the thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from vpsnap.store.sql import SqlStore, create_engine


class _Calls:
    """Which sqlite3 calls ran on which thread (patched into aiosqlite's thread entry)."""

    def __init__(self) -> None:
        self.in_thread: list[str] = []


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
    yield engine
    await engine.dispose()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> _Calls:
    record = _Calls()
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        inner = args[0] if args and callable(args[0]) else fn
        record.in_thread.append(getattr(inner, "__name__", repr(inner)))
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return record


async def test_a_write_transaction_makes_one_thread_hop(engine: AsyncEngine, calls: _Calls) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO t (v) VALUES ('a')"))
        assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar() == 1
    # BEGIN IMMEDIATE took the free lock inline; COMMIT stays in the thread.
    assert calls.in_thread == ["commit"]


async def _busy_timeout(conn: Any) -> int:
    return int((await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar())


async def test_a_contended_begin_waits_in_the_thread_with_its_busy_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    first = create_engine(f"sqlite+aiosqlite:///{path}", busy_timeout_seconds=7)
    second = create_engine(f"sqlite+aiosqlite:///{path}", busy_timeout_seconds=9)
    try:
        async with first.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (v TEXT)"))
        async with first.begin() as conn:
            await conn.execute(sa.text("INSERT INTO t (v) VALUES ('a')"))
            assert await _busy_timeout(conn) == 7000  # put back after the inline BEGIN

            async def write() -> None:
                async with second.begin() as c2:
                    await c2.execute(sa.text("INSERT INTO t (v) VALUES ('b')"))
                    assert await _busy_timeout(c2) == 9000

            task = asyncio.create_task(write())
            await asyncio.sleep(0.3)
            # Its inline BEGIN found the lock taken and did not fail (a busy timeout of 0
            # would have failed it at once): it waits in the thread while the loop runs on.
            assert not task.done()
        await asyncio.wait_for(task, 10)
        async with second.connect() as conn:
            assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar() == 2
    finally:
        await first.dispose()
        await second.dispose()


async def test_begin_immediate_runs_on_the_loop_thread_when_the_lock_is_free(
    engine: AsyncEngine,
) -> None:
    seen: list[tuple[str, str]] = []
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        raw.driver_connection._conn.set_trace_callback(  # type: ignore[union-attr]
            lambda sql: seen.append((sql, threading.current_thread().name))
        )
        async with conn.begin():
            await conn.execute(sa.text("INSERT INTO t (v) VALUES ('z')"))
    here = threading.current_thread().name
    assert ("BEGIN IMMEDIATE", here) in seen
    assert [name for sql, name in seen if sql == "COMMIT"] != [here]


async def test_read_only_transactions_stay_in_the_thread(
    engine: AsyncEngine, calls: _Calls
) -> None:
    reader = engine.execution_options(vpsnap_read_only=True)
    async with reader.begin() as conn:
        await conn.execute(sa.text("SELECT count(*) FROM t"))
    # BEGIN, the statement, its fetch, cursor closes, COMMIT: all through the thread.
    assert calls.in_thread.count("execute") == 2
    assert "commit" in calls.in_thread


async def test_inline_statements_run_on_the_loop_thread(engine: AsyncEngine) -> None:
    seen: list[str] = []

    def record(*_args: Any) -> None:
        seen.append(threading.current_thread().name)

    async with engine.begin() as conn:
        raw = await conn.get_raw_connection()
        raw.driver_connection._conn.set_trace_callback(record)  # type: ignore[union-attr]
        await conn.execute(sa.text("INSERT INTO t (v) VALUES ('b')"))
    assert seen[0] == threading.current_thread().name  # the INSERT
    assert seen[-1] != threading.current_thread().name  # COMMIT, in aiosqlite's thread


async def test_rollback_and_errors_keep_the_transaction_whole(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO t (v) VALUES ('c')"))
            raise RuntimeError
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO t (v) VALUES ('d')"))
        with pytest.raises(sa.exc.IntegrityError):
            async with conn.begin_nested():
                await conn.execute(sa.text("INSERT INTO t (v) VALUES ('d')"))
        await conn.execute(sa.text("INSERT INTO t (v) VALUES ('e')"))
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT v FROM t ORDER BY v"))).scalars().all()
    assert rows == ["d", "e"]


async def test_a_second_writer_waits_in_the_thread(engine: AsyncEngine, tmp_path: Path) -> None:
    other = create_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO t (v) VALUES ('f')"))

            # The other engine's BEGIN IMMEDIATE waits for our lock in its thread; the loop
            # runs on (this await would deadlock if it waited on the loop thread).
            async def write() -> None:
                async with other.begin() as c2:
                    await c2.execute(sa.text("INSERT INTO t (v) VALUES ('g')"))

            task = asyncio.create_task(write())
            await asyncio.sleep(0.2)
            assert not task.done()
        await asyncio.wait_for(task, 10)
    finally:
        await other.dispose()


async def test_bulk_transactions_keep_their_statements_in_the_thread(
    tmp_path: Path, calls: _Calls
) -> None:
    store = SqlStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}")
    try:
        async with store.transaction() as tx:
            await tx.conn.execute(sa.text("CREATE TABLE t (v TEXT)"))
        calls.in_thread.clear()
        async with store.transaction(bulk=True) as tx:
            await tx.conn.execute(sa.text("INSERT INTO t (v) VALUES ('a')"))
        assert calls.in_thread.count("execute") == 2  # BEGIN IMMEDIATE and the INSERT
        calls.in_thread.clear()
        async with store.transaction() as tx:
            await tx.conn.execute(sa.text("INSERT INTO t (v) VALUES ('b')"))
        assert calls.in_thread == ["commit"]  # BEGIN IMMEDIATE inline (the lock was free)
    finally:
        await store.dispose()
