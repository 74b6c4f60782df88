"""Job signals: wake workers when jobs are queued and long-poll waiters when a job changes.

``InProcessJobEvents`` works within one process (an asyncio event for the worker, watches for
waiters). ``PgListener`` adds PostgreSQL LISTEN/NOTIFY on top, so that a job queued or finished
by another process (another API process, an agent on another host) wakes this one: one
listening connection per process, fanned out in-process. The NOTIFYs themselves are sent by the
store inside the transactions that change jobs (``vpsnap.store.sql.Channel``).

A lost listening connection is re-established with backoff; right after, every worker and
every waiter is woken to re-read, so a change missed meanwhile is caught up, never waited on
until a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from vpsnap.domain.model import Job

log = structlog.get_logger("vpsnap.signals")

_RECONNECT_MIN_SECONDS = 0.2
_RECONNECT_MAX_SECONDS = 5.0


class _Watch:
    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.latest: Job | None = None

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            return False
        self.changed.clear()
        return True


class InProcessJobEvents:
    """Implements ``vpsnap.domain.ports.JobEvents`` within one process."""

    def __init__(self) -> None:
        self.work_available = asyncio.Event()
        self.queued_since_claim = False
        """Set with ``work_available`` when jobs were queued (not when a slot came free): the
        worker then claims without first reading whether anything is queued."""
        self._watches: dict[str, set[_Watch]] = {}

    def jobs_queued(self) -> None:
        self.queued_since_claim = True
        self.work_available.set()

    def job_changed(self, job_id: str, job: Job | None = None) -> None:
        for watch in self._watches.get(job_id, ()):
            watch.latest = job
            watch.changed.set()

    def wake_all(self) -> None:
        """Wake the worker and every waiter to re-read (after signals may have been lost)."""
        self.queued_since_claim = True
        self.work_available.set()
        for job_id in list(self._watches):
            self.job_changed(job_id)

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[_Watch]:
        watch = _Watch()
        self._watches.setdefault(job_id, set()).add(watch)
        try:
            yield watch
        finally:
            watchers = self._watches.get(job_id)
            if watchers is not None:
                watchers.discard(watch)
                if not watchers:
                    del self._watches[job_id]


Handler = Callable[[str], None]
"""Called with a notification's payload, on the event loop."""


class PgListener:
    """Listens on PostgreSQL channels and calls a handler per notification.

    ``on_reconnect`` runs after every (re)connection, before notifications flow: whatever was
    sent while no connection listened must be caught up by re-reading.
    """

    def __init__(
        self,
        dsn: str,
        handlers: dict[str, Handler],
        on_reconnect: Callable[[], None],
        *,
        keepalive_seconds: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._handlers = handlers
        self._on_reconnect = on_reconnect
        self._keepalive = keepalive_seconds
        self.connected = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Listen until ``stopping`` is set, reconnecting whenever the connection is lost."""
        import asyncpg  # noqa: PLC0415 - server-only dependency, loaded by the processes using it

        delay = _RECONNECT_MIN_SECONDS
        while not stopping.is_set():
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("listener_connect_failed", error=str(exc), retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                delay = min(delay * 2, _RECONNECT_MAX_SECONDS)
                continue
            delay = _RECONNECT_MIN_SECONDS
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                for channel, handler in self._handlers.items():
                    await conn.add_listener(channel, _callback(handler))
                self.connected.set()
                log.info("listener_connected", channels=sorted(self._handlers))
                self._on_reconnect()
                await self._hold(conn, lost, stopping)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("listener_lost", error=str(exc))
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)

    async def _hold(self, conn: Any, lost: asyncio.Event, stopping: asyncio.Event) -> None:
        # A connection can die without a FIN (a host or network gone): a periodic query notices.
        while not stopping.is_set() and not lost.is_set():
            waiters = {asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(lost.wait())}
            _, pending = await asyncio.wait(
                waiters, timeout=self._keepalive, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if stopping.is_set() or lost.is_set():
                break
            await asyncio.wait_for(conn.fetchval("SELECT 1"), self._keepalive)
        if lost.is_set():
            log.warning("listener_lost", error="connection closed")


def _callback(handler: Handler) -> Callable[..., None]:
    def deliver(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        handler(payload)

    return deliver


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The libpq-style DSN asyncpg takes, from vpsnap's SQLAlchemy URL."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - server-only dependency

    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)
