"""Connections of vpsnap's own for small read-only transactions
(``SqlStore.transaction(read_only=True, small=True)``, docs/performance.md "Reads, fourth
round"), below SQLAlchemy's connection and pool.

Through SQLAlchemy, a small read cost a pool checkout, ``BEGIN``, ``COMMIT``, the pool's reset
and return, and a task of its own for the close of ``async with`` (about 0.13 ms on SQLite, as
much as the statement), around one or two indexed statements. Here a transaction is a
connection taken from a list and put back:

- **SQLite** (``SqliteReadPool``): ``sqlite3`` connections opened ``query_only`` (SQLite itself
  refuses a write), WAL, foreign keys on, and a busy timeout of ``READ_BUSY_TIMEOUT_MS``. Their
  statements, ``BEGIN`` (deferred) and ``COMMIT`` run on the event loop's thread: under WAL a
  reader takes no lock a writer holds, and waits only while another connection recovers the WAL
  or is the last to close the file — rare, and capped at 100 ms, after which the read fails
  with "database is locked" (``DatabaseUnavailable``, a 503) instead of stalling the loop. A read
  transaction's ``COMMIT`` only releases the read mark (a checkpoint follows write commits,
  never a read's). Opening and closing a connection (which may recover or checkpoint the WAL)
  run in a worker thread.
- **PostgreSQL** (``PgReadPool``): ``asyncpg`` connections in autocommit (as SQLAlchemy's read
  transactions already were: under READ COMMITTED every statement has its own snapshot), with
  asyncpg's statement cache: a statement is one round trip (Bind, Execute, Sync) once prepared.
  JSON is decoded by the same codec SQLAlchemy's asyncpg dialect installs, so rows decode as
  they did. Each process opens at most ``PG_READ_CONNECTIONS`` of them, on first use, besides
  the engine's pool (10 + 10 overflow).

No pool here resets a connection on return: nothing run on them changes session state (no
``SET``, ``LISTEN``, temporary tables); a connection that failed is closed, not reused.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:  # imported when a PostgreSQL store is made: ~30 ms of start-up on SQLite
    import asyncpg

READ_BUSY_TIMEOUT_MS = 100
"""How long a small SQLite read may wait for a lock (ms); see the module docstring."""

SQLITE_READ_CONNECTIONS = 20
"""At most this many small-read connections per SQLite file and process (open at once)."""
SQLITE_READ_CONNECTIONS_KEPT = 4
"""Idle SQLite small-read connections kept open for the next read."""
PG_READ_CONNECTIONS = 4
"""At most this many PostgreSQL small-read connections per process (all kept open)."""

C = TypeVar("C")


def open_sqlite_reader(path: str) -> sqlite3.Connection:
    """A read-only ``sqlite3`` connection to ``path`` (blocking: call it in a thread).

    Autocommit at the driver (``isolation_level=None``: the caller sends ``BEGIN``/``COMMIT``),
    usable from another thread than the one that opened it. Raises ``sqlite3.Error``.
    """
    # The busy timeout from the start: the WAL pragma may wait for a lock too.
    conn = sqlite3.connect(
        path,
        timeout=READ_BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            "query_only=ON",
            f"busy_timeout={READ_BUSY_TIMEOUT_MS}",
        ):
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn


class _Pool(Generic[C]):
    """Connections opened on demand, at most ``limit`` at once, ``keep`` of them kept idle.

    Taking an idle connection makes no call that can wait (a semaphore with a free slot and a
    list pop); opening and closing are the subclass's, off the event loop or asynchronous.
    """

    def __init__(self, *, limit: int, keep: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[C] = []
        self._keep = keep
        self._closed = False
        self.opened = 0
        """Connections opened so far (tests, benchmarks)."""

    async def _open(self) -> C:
        raise NotImplementedError

    async def _close(self, conn: C) -> None:
        raise NotImplementedError

    async def acquire(self) -> C:
        """A connection for one transaction; give it back with ``release``.

        Waits while ``limit`` are in use. Raises what opening raises, ``RuntimeError`` after
        ``close``.
        """
        if self._closed:
            raise RuntimeError("the small-read connections are closed")
        await self._slots.acquire()
        if self._idle:
            return self._idle.pop()
        try:
            conn = await self._open()
        except BaseException:
            self._slots.release()
            raise
        self.opened += 1
        return conn

    async def release(self, conn: C, *, reuse: bool) -> None:
        """Give ``conn`` back: kept for the next transaction when ``reuse`` and there is room,
        else closed."""
        try:
            if reuse and not self._closed and len(self._idle) < self._keep:
                self._idle.append(conn)
                return
            await self._close(conn)
        finally:
            self._slots.release()

    async def close(self) -> None:
        """Close the idle connections; those in use are closed when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._close(conn)

    @property
    def idle(self) -> int:
        """Connections open and not in use."""
        return len(self._idle)


class SqliteReadPool(_Pool[sqlite3.Connection]):
    """``query_only`` ``sqlite3`` connections to one file, opened and closed in a thread."""

    def __init__(
        self,
        path: str,
        *,
        limit: int = SQLITE_READ_CONNECTIONS,
        keep: int = SQLITE_READ_CONNECTIONS_KEPT,
    ) -> None:
        super().__init__(limit=limit, keep=keep)
        self.path = path

    async def _open(self) -> sqlite3.Connection:
        return await asyncio.to_thread(open_sqlite_reader, self.path)

    async def _close(self, conn: sqlite3.Connection) -> None:
        # The last connection to close a WAL database checkpoints it: file I/O, in a thread.
        await asyncio.to_thread(conn.close)


async def _install_json_codecs(conn: asyncpg.Connection) -> None:
    """JSON and JSONB decoded to Python values, encoded from text, exactly as SQLAlchemy's
    asyncpg dialect sets them up (``setup_asyncpg_json_codec``/``…_jsonb_codec``)."""
    await conn.set_type_codec(
        "json",
        encoder=str.encode,
        decoder=lambda value: json.loads(value.decode()),
        schema="pg_catalog",
        format="binary",
    )
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + value.encode(),
        decoder=lambda value: json.loads(value[1:].decode()),
        schema="pg_catalog",
        format="binary",
    )


class PgReadPool(_Pool["asyncpg.Connection"]):
    """``asyncpg`` connections with the JSON codecs SQLAlchemy's dialect installs.

    ``connect`` opens one (``asyncpg.connect`` with the engine's arguments).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        limit: int = PG_READ_CONNECTIONS,
    ) -> None:
        super().__init__(limit=limit, keep=limit)
        self._connect = connect

    async def _open(self) -> asyncpg.Connection:
        conn = await self._connect()
        try:
            await _install_json_codecs(conn)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _close(self, conn: asyncpg.Connection) -> None:
        import asyncpg  # noqa: PLC0415 - PostgreSQL only (module docstring)

        if conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), timeout=5)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn.terminate()


# Arguments of SQLAlchemy's asyncpg adapter that asyncpg.connect does not take.
_ADAPTER_ONLY = (
    "async_creator_fn",
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
)


def pg_connect_args(
    dialect: Any, url: Any, server_settings: dict[str, str] | None
) -> dict[str, Any]:
    """``asyncpg.connect`` keyword arguments for the engine's ``url``, as its ``dialect`` makes
    them (host, port, user, password, database, the URL's options), plus ``server_settings``
    (the engine's ``connect_args``)."""
    args, kwargs = dialect.create_connect_args(url)
    if args:
        raise TypeError("asyncpg connect arguments are expected as keywords")
    for name in _ADAPTER_ONLY:
        kwargs.pop(name, None)
    if server_settings:
        kwargs["server_settings"] = dict(server_settings)
    return dict(kwargs)
