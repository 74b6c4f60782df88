"""Small read-only transactions (``SqlStore.transaction(small=True)``, issue 15): on SQLite they
run on the event loop's thread, on connections that refuse writes and never wait for the
writer; on both databases they read what is committed, and nothing else."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa

from tests.support import count_thread_hops
from vpsnap.domain.audit import Actor
from vpsnap.domain.errors import DatabaseUnavailable
from vpsnap.domain.model import (
    Account,
    ApiKey,
    Job,
    JobLane,
    JobStatus,
    JobType,
    ServiceStatus,
    Vps,
)
from vpsnap.domain.nodes import Node
from vpsnap.domain.ports import VpsFilter
from vpsnap.domain.storage import DataStore, VpsStorage
from vpsnap.store import migrate, small_reads, sql
from vpsnap.store.sql import SqlStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
# What these check is SQLite's alone (aiosqlite's thread, query_only, its write lock); PostgreSQL
# runs the other tests. Not a skip: the PostgreSQL variant is never collected.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def test_a_small_read_sees_committed_rows(store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.add_account(Account(id="acc_1", name="one", created_at=NOW))
    for _ in range(2):  # a fresh connection, then one back from the pool
        async with store.transaction(read_only=True, small=True) as tx:
            account = await tx.find_account_by_name("one")
        assert account is not None
        assert account.id == "acc_1"


async def test_a_small_transaction_is_a_read_only_one(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="read-only"):
        async with store.transaction(small=True):
            pass


@SQLITE_ONLY
async def test_on_sqlite_small_reads_make_no_thread_hop(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with store.transaction(read_only=True, small=True) as tx:
        await tx.list_accounts()  # opens the connection (on its thread)
    hops = 0
    queued = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await queued(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    async with store.transaction(read_only=True, small=True) as tx:
        await tx.list_accounts()
        await tx.find_account_by_name("nobody")
    assert hops == 0
    async with store.transaction(read_only=True) as tx:  # the usual path, for contrast
        await tx.list_accounts()
    assert hops > 0


@SQLITE_ONLY
async def test_on_sqlite_small_reads_refuse_writes(store: SqlStore) -> None:
    with pytest.raises(sa.exc.OperationalError, match="readonly"):
        async with store.transaction(read_only=True, small=True) as tx:
            await tx.add_account(Account(id="acc_2", name="two", created_at=NOW))


@SQLITE_ONLY
async def test_on_sqlite_a_small_read_does_not_wait_for_the_writer(store: SqlStore) -> None:
    async with store.transaction() as writer:  # BEGIN IMMEDIATE: holds the write lock
        await writer.add_account(Account(id="acc_3", name="three", created_at=NOW))
        # A reader that waited for the lock would fail after 100 ms ("database is locked").
        async with store.transaction(read_only=True, small=True) as tx:
            seen = await tx.find_account_by_name("three")
        assert seen is None  # not committed yet
    async with store.transaction(read_only=True, small=True) as tx:
        assert await tx.find_account_by_name("three") is not None


# --- fourth round: small reads below SQLAlchemy (store.small_reads) ------------------------


def _job(vps_id: str, job_id: str, status: JobStatus, **changes: Any) -> Job:
    job = Job(
        id=job_id,
        account_id="acc_1",
        vps_id=vps_id,
        type=JobType.SNAPSHOT_CREATE,
        status=status,
        snapshot_name="nightly ☃",
        payload={"nested": {"list": [1, 2.5, None, "x"]}},
        progress=0,
        result=None,
        error=None,
        attempts=0,
        created_at=NOW,
        lane=JobLane.QUICK,
        node="n1",
        created_by=Actor.admin("root"),
    )
    return dataclasses.replace(job, **changes)


async def _fill_every_table_read(store: SqlStore) -> None:
    """Rows for each statement in ``sql._SMALL_READ_QUERIES`` (awkward values included)."""
    vps = Vps("vps_1", "acc_1", "web", "n1", ("/d/web.qcow2",), 3, ServiceStatus.ACTIVE, NOW)
    async with store.transaction() as tx:
        await tx.add_account(Account(id="acc_1", name="one", created_at=NOW))
        await tx.add_vps(vps)
        await tx.add_api_key(
            ApiKey("key_1", "acc_1", frozenset({"vps:read", "jobs:read"}), NOW, None, None),
            "hash-1",
        )
        await tx.add_api_key(
            ApiKey("key_2", "acc_1", frozenset(), NOW, NOW, NOW, name="ünï ☃"), "hash-2"
        )
        await tx.add_job(_job("vps_1", "job_1", JobStatus.QUEUED), "n1")
        await tx.add_job(
            _job(
                "vps_1",
                "job_2",
                JobStatus.FAILED,
                result={"ok": True},
                error={"code": "boom", "detail": "naïve ☃"},
                started_at=NOW + timedelta(seconds=1),
                finished_at=NOW + timedelta(seconds=2, microseconds=7),
                lease_owner="worker-1",
                journal={"step": "deleted"},
            ),
            "n1",
        )
        await tx.heartbeat(Node("n1", "1.0", NOW, NOW + timedelta(microseconds=5), agent="h:1"))
        await tx.save_data_store(DataStore("n1", "/srv/a", 10**12, 10**9, NOW))
        await tx.save_data_store(DataStore("n1", "/srv/b ☃", 2, 1, NOW))
        await tx.save_vps_storage([VpsStorage("vps_1", "n1", ("/srv/a",), 12345, NOW)])


PARAMS = {
    "b_hash": ["hash-1", "hash-2", "nothing"],
    "b_id": ["job_1", "job_2", "job_none"],
    "b_name": ["n1", "n2"],
    "b_node": ["n1", "n2"],
    "b_vps": ["vps_1", "vps_none"],
}


async def test_small_reads_give_what_sqlalchemy_gives(store: SqlStore) -> None:
    await _fill_every_table_read(store)
    compared = 0
    for query in sql._SMALL_READ_QUERIES:
        names = [p.key for p in query._get_embedded_bindparams() if p.key in PARAMS]
        for values in itertools.product(*(PARAMS[name] for name in names)):
            params = dict(zip(names, values, strict=True))
            async with store.transaction(read_only=True) as usual:
                want = [dict(r) for r in (await usual.conn.execute(query, params)).mappings()]
            async with store.transaction(read_only=True, small=True) as tx:
                assert isinstance(tx, sql.SmallReadTransaction)
                got = [dict(r) for r in await tx._all(query, params)]
            assert got == want, (query, params)
            for row_got, row_want in zip(got, want, strict=True):
                assert {k: type(v) for k, v in row_got.items()} == {
                    k: type(v) for k, v in row_want.items()
                }
            compared += len(got)
    assert compared >= 8


async def test_the_methods_on_small_reads_return_what_the_usual_path_returns(
    store: SqlStore,
) -> None:
    await _fill_every_table_read(store)

    async def read(tx: Any) -> list[Any]:
        return [
            await tx.find_api_key_by_hash("hash-1"),
            await tx.find_api_key_by_hash("hash-2"),
            await tx.find_api_key_by_hash("none"),
            await tx.get_job("job_1"),
            await tx.get_job("job_2"),
            await tx.get_node("n1"),
            await tx.get_node("n2"),
            await tx.has_queued_jobs("n1"),
            await tx.has_queued_jobs("n2"),
            await tx.get_vps_storage("vps_1"),
            await tx.list_data_stores("n1"),
            await tx.get_vps_with_snapshots("vps_1"),
            await tx.list_vps("acc_1", VpsFilter(), None, 5),
        ]

    async with store.transaction(read_only=True) as usual:
        want = await read(usual)
    async with store.transaction(read_only=True, small=True) as tx:
        got = await read(tx)
        # Nothing of it went through SQLAlchemy's connection.
        assert tx.conn._conn is None  # type: ignore[attr-defined]
    assert got == want
    assert want[0] is not None and want[3] is not None and want[5] is not None


@SQLITE_ONLY
async def test_on_sqlite_the_own_connections_refuse_writes(store: SqlStore) -> None:
    pool = store._sqlite_reads
    assert pool is not None
    conn = await pool.acquire()
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("INSERT INTO accounts (id, name, created_at) VALUES ('a', 'b', 'c')")
        assert conn.execute("PRAGMA query_only").fetchone() == (1,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        # A statement that meets a lock waits at most 100 ms on the event loop's thread.
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (100,)
    finally:
        await pool.release(conn, reuse=True)


@SQLITE_ONLY
async def test_on_sqlite_a_locked_database_is_unavailable_not_a_hang(database_url: str) -> None:
    setup = SqlStore.from_url(database_url)
    await migrate.upgrade(setup.engine)
    await setup.dispose()
    # A connection in exclusive locking mode that wrote keeps every other connection out,
    # readers included, WAL or not: what a reader meets while another recovers the WAL. (It
    # can take that mode only while no other connection is open.)
    holder = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None)
    store = SqlStore.from_url(database_url)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO accounts (id, name, created_at) VALUES ('a', 'b', 'c')")
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as caught:
                async with store.transaction(read_only=True, small=True) as tx:
                    await tx.list_vps(None, VpsFilter(), None, 10)
            waited = time.monotonic() - started
            assert caught.value.code == "database_unavailable"
            assert "locked" in (caught.value.log_detail or "")
            assert waited < 1.0  # the 100 ms busy timeout, not the writers' 15 s
        holder.execute("ROLLBACK")
        holder.close()
        async with store.transaction(read_only=True, small=True) as tx:  # works again
            assert await tx.list_vps(None, VpsFilter(), None, 10) == []
    finally:
        holder.close()
        await store.dispose()


@SQLITE_ONLY
async def test_on_sqlite_connections_open_and_close_off_the_loop_and_statements_inline(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    opened = small_reads.open_sqlite_reader

    def recorded(path: str) -> sqlite3.Connection:
        threads.append(threading.current_thread().name)
        return opened(path)

    monkeypatch.setattr(small_reads, "open_sqlite_reader", recorded)
    pool = store._sqlite_reads
    assert pool is not None
    async with store.transaction(read_only=True, small=True) as tx:
        await tx.get_node("n1")
    assert len(threads) == 1
    assert threads[0] != threading.current_thread().name
    hops = count_thread_hops(monkeypatch)
    for _ in range(3):  # warm: no thread hop at all, no new connection
        async with store.transaction(read_only=True, small=True) as tx:
            await tx.get_node("n1")
            await tx.list_vps(None, VpsFilter(), None, 10)
    assert len(hops) == 0
    assert pool.opened == 1
    conn = await pool.acquire()
    await pool.release(conn, reuse=False)  # closed, in a thread
    assert len(hops) == 1
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")


async def test_small_read_connections_are_closed_at_dispose(database_url: str) -> None:
    url, _, schema = database_url.partition("#")
    store = SqlStore.from_url(url, schema=schema or None)
    if not schema:
        await migrate.upgrade(store.engine)
    pool = store._sqlite_reads or store._pg_reads
    assert pool is not None

    async def one_read(i: int) -> None:
        async with store.transaction(read_only=True, small=True) as tx:
            await tx.get_node(f"n{i}")
            await asyncio.sleep(0.01)  # several at once

    await asyncio.gather(*(one_read(i) for i in range(12)))
    connections = list(pool._idle)
    assert connections
    # PostgreSQL: at most PG_READ_CONNECTIONS per process, whatever the concurrency.
    if store._pg_reads is not None:
        assert pool.opened <= small_reads.PG_READ_CONNECTIONS
    await store.dispose()
    assert pool.idle == 0
    for conn in connections:
        if isinstance(conn, sqlite3.Connection):
            with pytest.raises(sqlite3.ProgrammingError):
                conn.execute("SELECT 1")
        else:
            assert conn.is_closed()
    with pytest.raises(RuntimeError, match="closed"):
        await pool.acquire()


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_on_postgres_a_lost_connection_is_unavailable_then_replaced(store: SqlStore) -> None:
    pool = store._pg_reads
    assert pool is not None
    async with store.transaction(read_only=True, small=True) as tx:
        await tx.get_node("n1")
    (conn,) = pool._idle
    async with store.engine.connect() as admin:
        await admin.execute(
            sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": conn.get_server_pid()}
        )
    await asyncio.sleep(0.1)
    with pytest.raises(DatabaseUnavailable):
        async with store.transaction(read_only=True, small=True) as tx:
            await tx.get_node("n1")
    async with store.transaction(read_only=True, small=True) as tx:  # a fresh connection
        assert await tx.get_node("n1") is None
    assert pool.opened == 2


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
@pytest.mark.parametrize(
    "error", ["AdminShutdownError", "CrashShutdownError", "CannotConnectNowError"]
)
async def test_on_postgres_a_server_shutting_down_is_unavailable_even_before_the_close(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    """A restarting server's FATAL (SQLSTATE 57P01-57P03) raised by the next statement while
    asyncpg has not yet marked the connection closed: a 503 (``DatabaseUnavailable``), not a
    500 — the cluster test of a PostgreSQL restart once logged a 500 here under CI's load.
    The driver's own error is raised in place of the round trip (the race is not reproducible
    on demand); the connection is then dropped and the next read opens a fresh one."""
    import asyncpg

    pool = store._pg_reads
    assert pool is not None
    async with store.transaction(read_only=True, small=True) as tx:
        await tx.get_node("n1")
    (conn,) = pool._idle
    assert not conn.is_closed()

    async def shutting_down(*_args: Any, **_kwargs: Any) -> Any:
        raise getattr(asyncpg.exceptions, error)("terminating connection")

    with monkeypatch.context() as patched:
        patched.setattr(asyncpg.Connection, "fetch", shutting_down)
        with pytest.raises(DatabaseUnavailable):
            async with store.transaction(read_only=True, small=True) as tx:
                await tx.get_node("n1")
    assert conn.is_closed() and pool.idle == 0
    async with store.transaction(read_only=True, small=True) as tx:  # a fresh connection
        assert await tx.get_node("n1") is None
    assert pool.opened == 2


async def test_a_snapshot_listing_reads_the_storage_in_the_same_statement(
    store: SqlStore,
) -> None:
    await _fill_every_table_read(store)
    async with store.transaction() as tx:
        await tx.add_vps(
            Vps("vps_2", "acc_1", "db", "n1", ("/d/db.qcow2",), 3, ServiceStatus.ACTIVE, NOW)
        )
    for vps_id in ("vps_1", "vps_2", "vps_none"):
        async with store.transaction(read_only=True) as usual:
            want = (await usual.get_vps_with_snapshots(vps_id), await usual.get_vps_storage(vps_id))
        async with store.transaction(read_only=True, small=True) as tx:
            assert isinstance(tx, sql.SmallReadTransaction)
            statements = 0
            run = tx._run

            async def counted(sql_text: str, args: tuple[Any, ...], run: Any = run) -> Any:
                nonlocal statements
                statements += 1
                return await run(sql_text, args)

            tx._run = counted
            got = (await tx.get_vps_with_snapshots(vps_id), await tx.get_vps_storage(vps_id))
            # Asked again: read again (the remembered row answers once).
            again = await tx.get_vps_storage(vps_id)
        assert got == want
        assert again == want[1]
        assert statements == (2 if vps_id != "vps_none" else 3)
    assert want[1] is None  # vps_none: nothing
