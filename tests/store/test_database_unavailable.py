"""A database that is not there, or a lock that is not given in time, is ``DatabaseUnavailable``
(503 ``database_unavailable`` with ``Retry-After``) only when nothing can have taken effect; a
failed commit of a write, whose outcome is unknown, and errors that are not outages stay what
they are (``SqlStore.transaction``)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.live_server import free_port
from vpsnap.domain.errors import DatabaseUnavailable
from vpsnap.domain.model import Account
from vpsnap.store import sql
from vpsnap.store.sql import DATABASE_RETRY_AFTER_SECONDS, SqlStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def _sqlite_path(store: SqlStore) -> str:
    return store.engine.url.database or ""


@SQLITE_ONLY
async def test_a_write_lock_held_past_the_busy_timeout_is_database_unavailable(
    store: SqlStore,
) -> None:
    quick = SqlStore.from_url(str(store.engine.url), busy_timeout_seconds=0.1)
    holder = sqlite3.connect(_sqlite_path(store), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer keeps SQLite's one write lock
        with pytest.raises(DatabaseUnavailable) as caught:
            async with quick.transaction() as tx:
                await tx.add_account(Account(id="acc_1", name="one", created_at=NOW))
        assert caught.value.code == "database_unavailable"
        assert caught.value.extensions == {"retryAfter": DATABASE_RETRY_AFTER_SECONDS}
        assert "locked" in (caught.value.log_detail or "")
        holder.execute("ROLLBACK")
        # Nothing took effect, and the store works again once the lock is gone.
        async with quick.transaction() as tx:
            assert await tx.find_account_by_name("one") is None
            await tx.add_account(Account(id="acc_1", name="one", created_at=NOW))
        async with quick.transaction(read_only=True) as tx:
            assert await tx.find_account_by_name("one") is not None
    finally:
        holder.close()
        await quick.dispose()


@SQLITE_ONLY
async def test_errors_that_are_not_outages_are_not_translated(store: SqlStore) -> None:
    # A statement SQLite refuses (a bug, a missing migration) needs someone to act: retrying
    # cannot help, so it must not be a retryable 503.
    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        async with store.transaction() as tx:
            await tx.conn.execute(sa.text("SELECT * FROM no_such_table"))
    with pytest.raises(sa.exc.IntegrityError):
        async with store.transaction() as tx:
            await tx.conn.execute(sa.text("INSERT INTO accounts (id) VALUES (NULL)"))


async def test_an_os_error_in_the_body_is_not_translated(store: SqlStore) -> None:
    # The block may do other things than SQL; their OSErrors are theirs.
    with pytest.raises(FileNotFoundError):
        async with store.transaction() as tx:
            await tx.list_accounts()
            await asyncio.to_thread(Path("/nonexistent/vpsnap").read_text)


async def test_no_server_to_connect_to_is_database_unavailable() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test"
    store = SqlStore.from_url(url)
    try:
        for read_only in (False, True):
            with pytest.raises(DatabaseUnavailable):
                async with store.transaction(read_only=read_only) as tx:
                    await tx.list_accounts()
    finally:
        await store.dispose()


async def _terminate(store: SqlStore, pid: int) -> None:
    engine = create_async_engine(store.engine.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await engine.dispose()


@POSTGRES_ONLY
async def test_a_connection_lost_mid_transaction_is_database_unavailable(store: SqlStore) -> None:
    with pytest.raises(DatabaseUnavailable):
        async with store.transaction() as tx:
            pid = (await tx.conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
            await tx.add_account(Account(id="acc_1", name="one", created_at=NOW))
            await _terminate(store, pid)  # what a PostgreSQL restart does to it
            await tx.list_accounts()
    # Rolled back with the connection; the pool hands out a fresh one.
    async with store.transaction(read_only=True) as tx:
        assert await tx.find_account_by_name("one") is None


@POSTGRES_ONLY
async def test_a_write_whose_commit_was_lost_is_not_called_undone(store: SqlStore) -> None:
    # The connection dies after the last statement, so COMMIT fails on the way: whether it
    # committed cannot be known from here, and the answer must not say "nothing was done".
    with pytest.raises(sa.exc.DBAPIError) as caught:
        async with store.transaction() as tx:
            pid = (await tx.conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
            await tx.add_account(Account(id="acc_1", name="one", created_at=NOW))
            await _terminate(store, pid)
    assert not isinstance(caught.value, DatabaseUnavailable)


class _TranslatedShutdown(Exception):
    """What SQLAlchemy's asyncpg adapter raises for a server error: its own exception carrying
    the SQLSTATE of asyncpg's (``pgcode``/``sqlstate``)."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"<class 'asyncpg.exceptions.AdminShutdownError'>: {sqlstate}")
        self.sqlstate = self.pgcode = sqlstate


@pytest.mark.parametrize("sqlstate", ["57P01", "57P02", "57P03"])
def test_a_server_shutting_down_mid_body_is_unavailable_but_never_a_writes_commit(
    sqlstate: str,
) -> None:
    """A restarting PostgreSQL's FATAL, raised by a statement before the driver saw the close
    (no disconnect detected): nothing took effect in the body; a write's COMMIT stays unknown.
    Other server errors (a constraint, 23505) stay what they are."""
    shutdown = sa.exc.DBAPIError("SELECT 1", (), _TranslatedShutdown(sqlstate))
    assert not shutdown.connection_invalidated
    assert sql._nothing_took_effect(shutdown, "body", read_only=False)
    assert sql._nothing_took_effect(shutdown, "commit", read_only=True)
    assert not sql._nothing_took_effect(shutdown, "commit", read_only=False)
    conflict = sa.exc.DBAPIError("INSERT", (), _TranslatedShutdown("23505"))
    assert not sql._nothing_took_effect(conflict, "body", read_only=False)
