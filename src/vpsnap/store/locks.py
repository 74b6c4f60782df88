"""PostgreSQL advisory locks held on a session of their own: one agent per node, one active
scheduler. The lock lives exactly as long as its connection, so a process that dies (kill -9
included) releases it as soon as PostgreSQL sees the connection close."""

from __future__ import annotations

import hashlib
from typing import Any

import structlog

log = structlog.get_logger("vpsnap.locks")


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    digest = hashlib.sha256(f"vpsnap:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SessionLock:
    """``pg_try_advisory_lock`` on a dedicated connection.

    ``acquire`` never blocks (False when another session holds it); ``check`` tells whether
    the lock is still held (its connection alive); ``release`` closes the connection.
    """

    def __init__(self, dsn: str, name: str) -> None:
        self._dsn = dsn
        self.name = name
        self.key = lock_key(name)
        self._conn: Any = None
        self.reachable = True
        """Whether the last ``acquire`` reached PostgreSQL: False means the answer said
        nothing about who holds the lock (the server is down or restarting)."""

    async def acquire(self) -> bool:
        import asyncpg  # noqa: PLC0415 - server-only dependency

        if self._conn is not None and await self.check():
            return True
        try:
            conn = await asyncpg.connect(self._dsn, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("lock_connect_failed", lock=self.name, error=str(exc))
            self.reachable = False
            return False
        self.reachable = True
        try:
            taken = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key))
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("lock_failed", lock=self.name, error=str(exc))
            self.reachable = False
            taken = False
        if not taken:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def check(self) -> bool:
        """Whether the lock is still ours (the connection that holds it answers)."""
        import asyncpg  # noqa: PLC0415 - server-only dependency

        if self._conn is None:
            return False
        try:
            await self._conn.fetchval("SELECT 1", timeout=5)
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            # A connection PostgreSQL dropped under it (a restart) can also leave asyncpg's
            # protocol half-way: "cannot switch to state 12; another operation is in
            # progress". The lock is gone with that session either way.
            asyncpg.exceptions.InternalClientError,
            TimeoutError,
        ) as exc:
            log.warning("lock_lost", lock=self.name, error=str(exc))
            await self.release()
            return False
        return True

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=2)
            except Exception as exc:  # closing a dead connection: the lock is gone either way
                log.debug("lock_close_failed", lock=self.name, error=str(exc))
