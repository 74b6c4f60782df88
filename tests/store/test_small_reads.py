"""Small read-only transactions (``SqlStore.transaction(small=True)``, issue 15): on SQLite they
run on the event loop's thread, on connections that refuse writes and never wait for the
writer; on both databases they read what is committed, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa

from vpsnap.domain.model import Account
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
