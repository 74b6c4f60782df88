"""aiosqlite connections that run SQLite calls without thread hops where that cannot block:
``InlineWriteConnection`` inside a write transaction (the engine's connections), and
``InlineReadConnection`` for small read-only transactions (``SqlStore.transaction(small=True)``,
its own pool of ``query_only`` connections; see its docstring).

aiosqlite runs every call on a ``sqlite3`` connection (cursor, execute, fetch, cursor close,
commit) in its own thread: a hop there and back per call, 10-13 hops for a 2-statement write
transaction through SQLAlchemy. ``InlineWriteConnection`` runs the calls made *inside a write
transaction* on the calling (event loop) thread instead, so such a transaction costs two hops:
``BEGIN IMMEDIATE`` and ``COMMIT`` — one when the write lock is free: ``BEGIN IMMEDIATE`` is
first tried inline with a busy timeout of 0 (below), and only waits in the thread when another
connection holds the lock.

Why that blocks no event loop (the rule "no blocking calls on the event loop" holds):

- ``BEGIN IMMEDIATE`` takes SQLite's write lock and, under WAL, the transaction's read snapshot.
  Until ``COMMIT``/``ROLLBACK`` the connection needs no further lock: another connection's
  writer cannot exist (one write lock), readers never block a WAL writer, so no statement
  inside can wait on ``busy_timeout``. What a statement does is CPU and page-cache work
  (writes to the WAL file are ``write()`` calls, never an ``fsync`` with ``synchronous=NORMAL``).
- ``BEGIN IMMEDIATE`` is tried inline with the connection's busy timeout set to 0 for it (two
  ``PRAGMA busy_timeout`` calls, which take no lock): SQLite then never sleeps in its busy
  handler but fails at once with ``SQLITE_BUSY`` when another writer, a recovery or a
  checkpoint is in the way, and the ``BEGIN IMMEDIATE`` goes to the thread, where it waits up
  to the busy timeout as before. Taking a free lock is shared-memory work on the WAL index (as
  the inline small reads' ``BEGIN`` is), no I/O that waits.
- ``COMMIT`` (it may run the WAL auto-checkpoint: page writes and ``fsync``), ``ROLLBACK``,
  ``close`` and anything outside such a transaction (deferred read transactions take their read
  lock at their first read; autocommit statements take locks) stay in aiosqlite's thread.
- Transaction-ending or lock-taking statements sent as SQL text (``BEGIN``, ``COMMIT``, ``END``,
  ``ROLLBACK`` but not ``ROLLBACK TO``, ``PRAGMA``, ``VACUUM``, ``ATTACH``, ``DETACH``) and
  ``executescript`` (which commits first) always go to the thread.
- The state is checked per call: the flag set when a ``BEGIN IMMEDIATE`` returned, *and*
  ``sqlite3.Connection.in_transaction`` (an error that made SQLite roll back on its own ends
  the inline path at once), *and* no earlier call of this connection still running in the
  thread (a call whose awaiting task was cancelled runs on; the two threads never use the
  ``sqlite3`` connection at the same time).

The cost is that a large statement inside a write transaction runs on the event loop too: a
retention sweep batch held it for up to ~1 s (docs/performance.md), so bulk work opens its
transaction with ``BEGIN_IMMEDIATE_IN_THREAD`` (``SqlStore.transaction(bulk=True)``) and keeps
every call in the thread.

Creating a cursor (a Python object, no SQLite call) and a rollback outside any transaction (a
no-op in ``sqlite3``; the pool's reset of a returned connection) run inline whenever no call is in
flight.
The ``sqlite3`` connection is opened with ``check_same_thread=False`` for this; the calls stay
serialised as above.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import aiosqlite

BEGIN_IMMEDIATE_IN_THREAD = "BEGIN IMMEDIATE -- statements in the thread"
"""A ``BEGIN IMMEDIATE`` after which the statements still go to the thread (bulk work whose
statements would hold the event loop for long: ``SqlStore.transaction(bulk=True)``)."""

# First keyword of SQL text that must not run inline even inside a write transaction.
_THREAD_ONLY_KEYWORDS = frozenset(
    {"BEGIN", "COMMIT", "END", "ROLLBACK", "PRAGMA", "VACUUM", "ATTACH", "DETACH"}
)
_WRITE_BEGINS = (["IMMEDIATE"], ["EXCLUSIVE"])
_INLINE_CURSOR_METHODS = frozenset(
    {"execute", "executemany", "fetchone", "fetchmany", "fetchall", "close"}
)


_SQLITE_BUSY = 5  # the primary result code (extended codes keep it in their low byte)
_BUSY: Any = object()  # an inline BEGIN IMMEDIATE that would have had to wait


def _keywords(sql: str) -> list[str]:
    """The first two words of ``sql``, upper case (statements here start with a keyword)."""
    return sql.lstrip(" \t\r\n(").upper().split(None, 2)[:2]


def _thread_only(sql: str) -> bool:
    """Whether ``sql`` ends or starts a transaction or takes locks (``_THREAD_ONLY_KEYWORDS``;
    ``ROLLBACK TO`` a savepoint does not): never run inline."""
    words = _keywords(sql)
    if not words or words[0] not in _THREAD_ONLY_KEYWORDS:
        return False
    return not (words[0] == "ROLLBACK" and words[1:2] == ["TO"])


class InlineWriteConnection(aiosqlite.Connection):
    """``aiosqlite.Connection`` whose calls inside a ``BEGIN IMMEDIATE`` transaction run inline.

    Same interface and errors as ``aiosqlite.Connection`` (the ``sqlite3`` exceptions, raised
    by the awaited call); see the module docstring for which calls run where and why.
    """

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)
        self._write_locked = False
        # The connection's busy timeout (ms), read at the first inline BEGIN IMMEDIATE.
        self._busy_timeout_ms: int | None = None
        # Calls queued to the thread and not finished yet (updated from both threads).
        self._in_thread = 0
        self._in_thread_lock = threading.Lock()

    def _inline_allowed(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> bool:
        connection = self._connection
        if self._in_thread or connection is None:
            return False
        owner = getattr(fn, "__self__", None)
        name = getattr(fn, "__name__", "")
        if owner is connection:
            # Creating a cursor makes no SQLite call, nor does a rollback outside a transaction
            # (the pool's reset of a returned connection); the rest stays in the thread.
            if name == "rollback":
                return not self._conn.in_transaction
            return name == "cursor"
        if not (
            self._write_locked
            and isinstance(owner, sqlite3.Cursor)
            and name in _INLINE_CURSOR_METHODS
            and connection.in_transaction
        ):
            return False
        if name in ("execute", "executemany") and args and isinstance(args[0], str):
            return not _thread_only(args[0])
        return True

    def execute_inline(
        self, sql: str, parameters: tuple[Any, ...] | list[tuple[Any, ...]], *, many: bool
    ) -> tuple[int, list[tuple[Any, ...]]] | None:
        """Run ``sql`` now, on the calling thread, if this connection is inside a write
        transaction whose calls run inline (the same test as ``_execute``'s for a cursor's
        ``execute``); None when it is not, and the caller goes through aiosqlite as usual.

        Returns (rowcount, rows): ``executemany`` with a sequence of parameter tuples when
        ``many``. Raises the ``sqlite3`` error of the statement. For ``store.driver_sql``: a
        statement run so makes no call through SQLAlchemy or a greenlet either.
        """
        connection = self._connection
        if (
            self._in_thread
            or connection is None
            or not self._write_locked
            or not connection.in_transaction
        ):
            return None
        if _thread_only(sql):
            return None
        cursor = (
            connection.executemany(sql, parameters) if many else connection.execute(sql, parameters)
        )
        try:
            rows = cursor.fetchall() if cursor.description is not None else []
            return cursor.rowcount, rows
        finally:
            cursor.close()

    def _may_begin_inline(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> bool:
        """A plain ``BEGIN IMMEDIATE`` (not the bulk one) on an idle connection."""
        connection = self._connection
        return (
            connection is not None
            and not self._in_thread
            and not connection.in_transaction
            and getattr(fn, "__name__", "") == "execute"
            and isinstance(getattr(fn, "__self__", None), sqlite3.Cursor)
            and bool(args)
            and args[0] == "BEGIN IMMEDIATE"
        )

    def _begin_without_waiting(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``BEGIN IMMEDIATE`` on the calling thread with a busy timeout of 0: it takes the
        write lock at once or fails at once with ``SQLITE_BUSY`` (another writer, a recovery
        or a checkpoint in the way), and never sleeps on the busy handler; ``_BUSY`` then,
        and the caller waits in the thread as before. The connection's busy timeout is put
        back either way."""
        connection = self._connection
        assert connection is not None
        if self._busy_timeout_ms is None:
            self._busy_timeout_ms = int(connection.execute("PRAGMA busy_timeout").fetchone()[0])
        connection.execute("PRAGMA busy_timeout=0")
        try:
            result = fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_BUSY:
                return _BUSY
            raise
        finally:
            connection.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        self._write_locked = True
        return result

    def _run_counted(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            with self._in_thread_lock:
                self._in_thread -= 1

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` inline when that is safe, else in aiosqlite's thread.

        Raises what ``fn`` raises; ``ValueError`` when the connection is closed.
        """
        if self._inline_allowed(fn, args):
            return fn(*args, **kwargs)
        if self._may_begin_inline(fn, args):
            began = self._begin_without_waiting(fn, *args, **kwargs)
            if began is not _BUSY:
                return began
            # Another writer holds the lock: wait for it in the thread, as always.
        begin: list[str] | None = None
        if getattr(fn, "__name__", "") == "execute" and args and isinstance(args[0], str):
            words = _keywords(args[0])
            if words and words[0] in _THREAD_ONLY_KEYWORDS:
                # The transaction ends (or a new one starts): no inline call until proven again.
                self._write_locked = False
                begin = words
        elif getattr(fn, "__self__", None) is self._connection:
            self._write_locked = False  # commit, rollback, close, executescript, ...
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")  # what aiosqlite raises, before counting
        with self._in_thread_lock:
            self._in_thread += 1
        # The thread decrements the count when the call has run, even if our task was cancelled.
        result = await super()._execute(self._run_counted, fn, *args, **kwargs)  # type: ignore[no-untyped-call]
        if begin is not None and begin[0] == "BEGIN" and begin[1:2] in _WRITE_BEGINS:
            self._write_locked = args[0] != BEGIN_IMMEDIATE_IN_THREAD
        return result


def sqlite_connector(database: str, **kwargs: Any) -> Callable[[], sqlite3.Connection]:
    """A connector for ``InlineWriteConnection``: ``sqlite3.connect`` with ``kwargs``.

    ``check_same_thread`` is forced off: the connection is used from aiosqlite's thread and,
    for inline calls, the event loop's thread, never both at once.
    """
    kwargs["check_same_thread"] = False

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return connection

    return connector


async def connect_inline(database: str, **kwargs: Any) -> InlineWriteConnection:
    """Open an ``InlineWriteConnection`` (``kwargs``: ``sqlite3.connect`` arguments).

    Raises the ``sqlite3`` error of a failed open.
    """
    connection = InlineWriteConnection(sqlite_connector(database, **kwargs), 64)
    # As SQLAlchemy does for its own aiosqlite connections: a forgotten connection's thread
    # must not keep the process alive.
    connection._thread.daemon = True
    await connection
    return connection


class InlineReadConnection(aiosqlite.Connection):
    """An aiosqlite connection whose statements run on the calling thread (the event loop's)
    instead of being queued to the connection's own thread and awaited back.

    Only for small read-only transactions (``SqlStore.transaction(small=True)``), and since
    the fourth round of the reads only for what such a transaction asks beyond the statements
    ``store.small_reads``' own connections run (``sql._FallbackConnection``): under WAL a
    reader takes no lock a writer holds, so an indexed read of a page costs about 0.1 ms of
    CPU, less than one hop to a thread and back (each of ``BEGIN``, cursor, execute, fetch,
    cursor close, ``COMMIT`` and the pool's reset is one such hop, 0.1-1 ms each under load).
    Opening and closing the file (which may recover or checkpoint the WAL) still run on the
    connection's thread.
    """

    inline = False
    """Set once the connection is open and set up; cleared again before it is closed."""

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.inline:
            return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def close(self) -> None:
        self.inline = False
        await super().close()


# How long an inline reader may wait for a lock (ms). Under WAL a reader waits only while
# another connection recovers the WAL after a crash or is the last to close the database:
# rare and short. Past this the read fails rather than stall the event loop.
INLINE_READ_BUSY_TIMEOUT_MS = 100


async def connect_inline_read(database: str) -> InlineReadConnection:
    """Open a read-only ``InlineReadConnection`` (WAL, foreign keys, ``query_only``, a busy
    timeout of ``INLINE_READ_BUSY_TIMEOUT_MS``); its owner sets ``inline`` once set up.

    Raises the ``sqlite3`` error of a failed open.
    """

    def open_file() -> sqlite3.Connection:
        # Runs on the connection's own thread; used on the event loop's thread afterwards.
        conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            "query_only=ON",
            f"busy_timeout={INLINE_READ_BUSY_TIMEOUT_MS}",
        ):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    connection = InlineReadConnection(open_file, iter_chunk_size=64)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite's own connections
    await connection
    return connection
