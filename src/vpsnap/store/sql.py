"""The SQL implementation of the store port, on SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar, cast

import aiosqlite
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from vpsnap.domain.audit import Actor
from vpsnap.domain.disks import DiskFile, DiskOwner
from vpsnap.domain.errors import (
    Conflict,
    DatabaseUnavailable,
    DiskAlreadyRegistered,
    IdempotencyKeyInUse,
    SnapshotNameTaken,
)
from vpsnap.domain.idempotency import IdempotencyRecord, IdempotencyState
from vpsnap.domain.model import (
    Account,
    ApiKey,
    Billing,
    Consistency,
    IntentState,
    Job,
    JobLane,
    JobStatus,
    JobType,
    OperatingSystem,
    PowerState,
    Resources,
    ServiceStatus,
    Snapshot,
    SnapshotOrigin,
    SnapshotStatus,
    VmConfig,
    VmFacts,
    Vps,
    VpsRef,
    WriteIntent,
)
from vpsnap.domain.nodes import Node, NodeStats
from vpsnap.domain.ports import ClaimRequest, StoredSession, StoredUser, VpsFilter
from vpsnap.domain.rules import name_key
from vpsnap.domain.schedules import Schedule
from vpsnap.domain.storage import VpsStorage
from vpsnap.domain.users import Role, Session, User
from vpsnap.store.bulk import insert_rows
from vpsnap.store.machines import machine_from_json, machine_to_json
from vpsnap.store.operations import (
    GET_VPS_STORAGE,
    LIST_DATA_STORES_OF_NODE,
    OperationsQueries,
    vps_storage_from_row,
)
from vpsnap.store.raw import RawSelect, RawWrite, fetch_rows
from vpsnap.store.small_reads import PgReadPool, SqliteReadPool, pg_connect_args
from vpsnap.store.sqlite_connection import (
    BEGIN_IMMEDIATE_IN_THREAD,
    InlineWriteConnection,
    connect_inline,
    connect_inline_read,
)

if TYPE_CHECKING:  # imported when a PostgreSQL store is made: ~30 ms of start-up on SQLite
    import asyncpg

from vpsnap.store.tables import (
    accounts,
    add_postgresql_options,
    api_keys,
    idempotency_records,
    jobs,
    nodes,
    sessions,
    snapshot_schedules,
    snapshots,
    users,
    vps,
    vps_disks,
    vps_storage,
    write_intents,
)

Row = Mapping[str, Any]
_READ_ONLY = "vpsnap_read_only"
_BULK = "vpsnap_bulk"

# Statements on the hot path of every job are built once: constructing SQLAlchemy expressions
# per call cost more than running them (measured with bench/snapshot_latency.py).
_bp = sa.bindparam
_GET_VPS = sa.select(vps).where(vps.c.id == _bp("b_id"))
_GET_VPS_LOCKED = _GET_VPS.with_for_update()
_FIND_KEY = sa.select(api_keys).where(api_keys.c.secret_hash == _bp("b_hash"))
_FIND_USER = sa.select(users).where(users.c.email == _bp("b_email"))
# Every authenticated panel request runs this: one indexed join, built once.
_FIND_SESSION = (
    sa.select(
        users,
        sessions.c.id.label("session_id"),
        sessions.c.created_at.label("session_created_at"),
        sessions.c.last_seen_at,
    )
    .select_from(sessions.join(users, sessions.c.user_id == users.c.id))
    .where(sessions.c.token_hash == _bp("b_hash"))
)
_LIST_SNAPSHOTS = (
    sa.select(snapshots)
    .where(snapshots.c.vps_id == _bp("b_vps"))
    .order_by(snapshots.c.created_at, snapshots.c.name_key)
)
_GET_NODE = sa.select(nodes).where(nodes.c.name == _bp("b_name"))
_GET_SNAPSHOT = sa.select(snapshots).where(
    snapshots.c.vps_id == _bp("b_vps"), snapshots.c.name_key == _bp("b_key")
)


_GET_VPS_RAW = RawSelect(_GET_VPS, vps)
# A VPS and its snapshots (oldest first) in one statement: one round trip fewer per snapshot
# listing on PostgreSQL. A VPS without snapshots is one row with the snapshot columns NULL.
_GET_VPS_WITH_SNAPSHOTS_RAW = RawSelect(
    sa.select(vps, snapshots)
    .select_from(vps.outerjoin(snapshots, snapshots.c.vps_id == vps.c.id))
    .where(vps.c.id == _bp("b_id"))
    .order_by(snapshots.c.created_at, snapshots.c.name_key),
    vps,
    snapshots,
)
# The same with the VPS's published storage (one row or NULLs, vps_id is its key): what a
# snapshot listing reads next, in the same round trip (SmallReadTransaction).
_GET_VPS_WITH_SNAPSHOTS_AND_STORAGE_RAW = RawSelect(
    sa.select(vps, snapshots, vps_storage)
    .select_from(
        vps.outerjoin(snapshots, snapshots.c.vps_id == vps.c.id).outerjoin(
            vps_storage, vps_storage.c.vps_id == vps.c.id
        )
    )
    .where(vps.c.id == _bp("b_id"))
    .order_by(snapshots.c.created_at, snapshots.c.name_key),
    vps,
    snapshots,
    vps_storage,
)
_LIST_SNAPSHOTS_RAW = RawSelect(_LIST_SNAPSHOTS, snapshots)
# Every job's end reads its snapshot's row, and the worker its node's.
_GET_SNAPSHOT_RAW = RawSelect(_GET_SNAPSHOT, snapshots)
_GET_NODE_RAW = RawSelect(_GET_NODE, nodes)
_GET_VPS_LOCKED_RAW = RawSelect(_GET_VPS_LOCKED, vps)

# The VPS list: one statement per combination of filters (at most 2^5), built on first use.
# The limit is appended to the SQL text, not bound: PostgreSQL's generic plan of a prepared
# statement does not know a bound LIMIT is small, and chose a scan and sort of the whole
# account over the (account_id, id) index (27 ms instead of 0.03 ms at 10,000 VPSes in
# bench/scale.py).
_LIST_VPS_FILTERS = ("b_account", "b_name", "b_ip", "b_node", "b_after")
_LIST_VPS_COLUMNS = (vps.c.account_id, vps.c.name_key, vps.c.primary_ip, vps.c.node)
_LIST_VPS_QUERIES: dict[tuple[bool, ...], RawSelect] = {}


def _list_vps_query(shape: tuple[bool, ...]) -> RawSelect:
    """The list statement for ``shape`` (which of ``_LIST_VPS_FILTERS`` are given)."""
    found = _LIST_VPS_QUERIES.get(shape)
    if found is None:
        query = sa.select(vps)
        for given, name, column in zip(shape, _LIST_VPS_FILTERS, _LIST_VPS_COLUMNS, strict=False):
            if given:
                query = query.where(column == _bp(name))
        if shape[4]:
            query = query.where(vps.c.id > _bp("b_after"))
        found = RawSelect(query.order_by(vps.c.id), vps)
        _LIST_VPS_QUERIES[shape] = found
    return found


_UPDATE_SNAPSHOT = snapshots.update().where(
    snapshots.c.vps_id == _bp("b_vps"), snapshots.c.name_key == _bp("b_key")
)
_REMOVE_SNAPSHOT = snapshots.delete().where(
    snapshots.c.vps_id == _bp("b_vps"), snapshots.c.name_key == _bp("b_key")
)
_SET_SNAPSHOT_STATE = (
    snapshots.update()
    .where(
        snapshots.c.vps_id == _bp("b_vps"),
        snapshots.c.name_key == _bp("b_key"),
        snapshots.c.status == _bp("b_from"),
    )
    .values(status=_bp("b_status"))
)
_SET_CURRENT = vps.update().where(vps.c.id == _bp("b_id"))
_GET_JOB = sa.select(jobs).where(jobs.c.id == _bp("b_id"))
_UPDATE_JOB = jobs.update().where(jobs.c.id == _bp("b_id"))
_FINISH_JOB = jobs.update().where(
    jobs.c.id == _bp("b_id"),
    jobs.c.lease_owner == _bp("b_worker"),
    jobs.c.status == JobStatus.IN_PROGRESS.value,
)
_UNFINISHED = [JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value, JobStatus.PENDING.value]
# Written out, not bound: the partial index ix_jobs_unfinished_vps (migration 0014) covers
# exactly these rows, and a planner can use a partial index only when it sees the condition
# in the statement (a bound list could hold anything, and PostgreSQL's generic plans would not).
_IS_UNFINISHED = jobs.c.status.in_([sa.literal_column(f"'{status}'") for status in _UNFINISHED])
_ACTIVE_JOB = sa.select(jobs.c.id).where(jobs.c.vps_id == _bp("b_vps"), _IS_UNFINISHED).limit(1)
# One probe of the partial index per VPS (a correlated subquery with LIMIT, which PostgreSQL
# cannot flatten into a join), for "which of these VPSes have an unfinished job". Asked as
# `jobs.vps_id IN (200 ids) AND status IN (...)`, PostgreSQL estimated the 200 ids to match
# most of the table and read every unfinished job through ix_jobs_status_node instead, each
# time: while a sweep queues 100,000 jobs faster than autovacuum analyzes the table, that was
# 52 of the sweep's 90 s (docs/performance.md).
_UNFINISHED_JOB = (
    sa.select(jobs.c.id)
    .where(jobs.c.vps_id == vps.c.id, _IS_UNFINISHED)
    .limit(1)
    .correlate(vps)
    .scalar_subquery()
)
_NEXT_PENDING = (
    sa.select(jobs)
    .where(jobs.c.vps_id == _bp("b_vps"), jobs.c.status == JobStatus.PENDING.value)
    .order_by(jobs.c.created_at, jobs.c.id)
    .limit(1)
)
# By ix_jobs_status_node: at most one index entry read.
_ANY_QUEUED = (
    sa.select(jobs.c.id)
    .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.node == _bp("b_node"))
    .limit(1)
)
_NOTIFY = sa.select(sa.func.pg_notify(_bp("b_channel"), _bp("b_payload")))
_RECORD_JOURNAL = (
    jobs.update()
    .where(
        jobs.c.id == _bp("b_id"),
        jobs.c.lease_owner == _bp("b_worker"),
        jobs.c.status == JobStatus.IN_PROGRESS.value,
    )
    .values(journal=_bp("journal"))
)
_COUNT_UNFINISHED = (
    sa.select(sa.func.count())
    .select_from(jobs)
    .where(jobs.c.vps_id == _bp("b_vps"), _IS_UNFINISHED)
)
_EXTEND_LEASE = (
    jobs.update()
    .where(
        jobs.c.id == _bp("b_id"),
        jobs.c.lease_owner == _bp("b_worker"),
        jobs.c.status == JobStatus.IN_PROGRESS.value,
    )
    .values(lease_expires_at=_bp("b_until"))
)

_NOTIFY_RETURNING = sa.func.pg_notify(_bp("b_channel"), _bp("b_payload"))

# At most one job per VPS is ever queued or in progress (the others wait as pending), so the
# oldest queued jobs can be taken without looking at their VPSes.
# The claim's candidates with, for each, how many jobs of its account already run on the node:
# one statement instead of the candidates and a GROUP BY over the running jobs (the same count,
# for the accounts the claim can use; in one statement it is one snapshot on PostgreSQL, too).
_RUNNING = jobs.alias("running")
_CLAIM_CANDIDATES = RawSelect(
    sa.select(
        jobs,
        sa.select(sa.func.count())
        .select_from(_RUNNING)
        .where(
            _RUNNING.c.node == jobs.c.node,
            _RUNNING.c.status == sa.literal_column(f"'{JobStatus.IN_PROGRESS.value}'"),
            _RUNNING.c.account_id == jobs.c.account_id,
        )
        .scalar_subquery(),
    )
    .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.node == _bp("b_node"))
    .order_by(jobs.c.created_at, jobs.c.id)
    .limit(_bp("b_limit"))
    .with_for_update(skip_locked=True, of=jobs),
    jobs,
)
_JOB_COLUMNS = tuple(column.name for column in jobs.c)
# The claim writes only what it changes: the row is the one just read, and stays locked
# (SQLite's write lock since BEGIN IMMEDIATE; PostgreSQL's FOR UPDATE), so the other columns
# are what they were. On PostgreSQL the job's NOTIFY rides on the same statement (RETURNING
# pg_notify: one round trip, sent in the same transaction, delivered at commit).
_CLAIM_JOB = (
    jobs.update()
    .where(jobs.c.id == _bp("b_id"))
    .values(
        status=JobStatus.IN_PROGRESS.value,
        attempts=_bp("b_attempts"),
        started_at=_bp("b_started"),
        lease_owner=_bp("b_worker"),
        lease_expires_at=_bp("b_until"),
    )
)
_CLAIM_JOB_RAW = RawWrite(_CLAIM_JOB)
_CLAIM_JOB_NOTIFY_RAW = RawWrite(_CLAIM_JOB.returning(_NOTIFY_RETURNING))
# A job's end, conditional on the lease, writing only the columns an end can change (the
# journal included: the ended job is the claimed one, whose journal the long-polls are shown
# and the row keeps, as the whole-row update of before did).
_FINISH_JOB_VALUES = {
    "status": _bp("b_status"),
    "journal": _bp("b_journal"),
    "progress": _bp("b_progress"),
    "result": _bp("b_result"),
    "error": _bp("b_error"),
    "finished_at": _bp("b_finished"),
    "lease_owner": sa.null(),
    "lease_expires_at": sa.null(),
}
_FINISH_JOB_RAW = RawWrite(_FINISH_JOB.values(**_FINISH_JOB_VALUES))
_FINISH_JOB_NOTIFY_RAW = RawWrite(
    _FINISH_JOB.values(**_FINISH_JOB_VALUES).returning(_NOTIFY_RETURNING)
)
_COUNT_UNFINISHED_RAW = RawSelect(_COUNT_UNFINISHED)
_RECORD_JOURNAL_RAW = RawWrite(_RECORD_JOURNAL)
_SET_CURRENT_RAW = RawWrite(_SET_CURRENT.values(current_snapshot=_bp("b_name")))
# A snapshot the job took: its row made available (every column the success writes).
_RECORD_TAKEN_RAW = RawWrite(
    _UPDATE_SNAPSHOT.values(
        status=SnapshotStatus.AVAILABLE.value,
        consistency=_bp("b_consistency"),
        consistency_reason=_bp("b_reason"),
        includes_memory_state=_bp("b_memory"),
        parent_name=_bp("b_parent"),
        disk_created_at=_bp("b_disk_created"),
        missing_since=sa.null(),
        vm_config=_bp("b_vm_config"),
    )
)
_OPEN_INTENTS_OF_JOB = sa.and_(
    write_intents.c.job_id == _bp("b_job"),
    write_intents.c.state == sa.literal_column(f"'{IntentState.OPEN.value}'"),
)
_CLOSE_INTENTS = RawWrite(
    write_intents.update()
    .where(_OPEN_INTENTS_OF_JOB)
    .values(state=_bp("b_state"), closed_at=_bp("b_at"))
)
_CLOSE_INTENTS_NAMED = RawWrite(
    write_intents.update()
    .where(_OPEN_INTENTS_OF_JOB, write_intents.c.name_key == _bp("b_key"))
    .values(state=_bp("b_state"), closed_at=_bp("b_at"))
)
_NEXT_PENDING_RAW = RawSelect(_NEXT_PENDING, jobs)


def _busy_vps(vps_ids: Sequence[str]) -> sa.Select[str]:
    """Which of ``vps_ids`` have an unfinished job (``SqlTransaction.vps_with_unfinished_jobs``)."""
    return sa.select(vps.c.id).where(vps.c.id.in_(vps_ids), _UNFINISHED_JOB.is_not(None))


def _mark_expired(vps_ids: Sequence[str], now: datetime) -> sa.Update:
    """The retention sweep's move of every expired ``available`` snapshot of ``vps_ids`` to
    ``deleting`` (``SqlTransaction.mark_expired_deleting``), returning each one's VPS id, name
    and expiry."""
    # Conditional and in one statement (by the primary key's leading column): a restore claimed
    # meanwhile (available -> restoring, without the VPS lock) keeps its snapshot. The status
    # and expiry are wrapped in coalesce (a no-op: both are NOT NULL) so that no index matches
    # them and the primary key is the only way in: SQLite, without statistics, otherwise took
    # ix_snapshots_status_expires_at and read every expired snapshot still available, for each
    # batch (12.5 of 51 s sweeping 100,000).
    return (
        snapshots.update()
        .where(
            snapshots.c.vps_id.in_(vps_ids),
            sa.func.coalesce(snapshots.c.status, snapshots.c.status)
            == SnapshotStatus.AVAILABLE.value,
            sa.func.coalesce(snapshots.c.expires_at, snapshots.c.expires_at) <= now,
        )
        .values(status=SnapshotStatus.DELETING.value)
        .returning(snapshots.c.vps_id, snapshots.c.name, snapshots.c.expires_at)
    )


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(
    url: str, *, schema: str | None = None, busy_timeout_seconds: float = 15.0
) -> AsyncEngine:
    """An async engine tuned for the backend.

    SQLite: WAL, a busy timeout (``busy_timeout_seconds``: how long a writer waits for another
    writer's lock; past it the transaction fails with ``DatabaseUnavailable``), and ``BEGIN
    IMMEDIATE`` for every transaction so that a read-then-write transaction takes the write
    lock up front (otherwise two concurrent creates could both read a free slot). PostgreSQL:
    row locks (``FOR UPDATE``) do that job instead.
    """
    if _is_sqlite(url):

        async def _connect() -> InlineWriteConnection:
            # Write transactions run their statements without thread hops (sqlite_connection).
            args, kwargs = engine.dialect.create_connect_args(engine.url)
            return await connect_inline(*args, **{**kwargs, "timeout": busy_timeout_seconds})

        engine = create_async_engine(url, async_creator=_connect)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Hand transaction control to SQLAlchemy (pysqlite's own BEGIN is deferred).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={round(busy_timeout_seconds * 1000)}")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            # Read-only transactions stay deferred: under WAL they never wait for the writer.
            if conn.get_execution_options().get(_READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            elif conn.get_execution_options().get(_BULK):
                conn.exec_driver_sql(BEGIN_IMMEDIATE_IN_THREAD)
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    add_postgresql_options()  # the tables' PostgreSQL-only options (store/tables.py)
    connect_args: dict[str, Any] = {}
    if schema is not None:
        connect_args["server_settings"] = {"search_path": schema}
    return create_async_engine(url, pool_size=10, max_overflow=10, connect_args=connect_args)


def _inline_read_engine(url: sa.URL) -> AsyncEngine:
    """Read-only connections to the SQLite file of ``url`` whose statements run inline
    (``store.sqlite_connection.InlineReadConnection``).

    ``PRAGMA query_only`` makes SQLite itself refuse a write on them.
    """
    path = url.database or ""

    async def connect() -> aiosqlite.Connection:
        return await connect_inline_read(path)

    engine = create_async_engine(
        url, async_creator=connect, pool_size=4, max_overflow=16, pool_timeout=30
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _go_inline(dbapi_connection: Any, _record: Any) -> None:
        # Last of the connect listeners (SQLAlchemy's own set-up ran through the thread).
        dbapi_connection._connection.inline = True

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")  # deferred: a WAL reader never waits for the writer

    return engine


class Channel(StrEnum):
    """PostgreSQL NOTIFY channels (suffixes of ``SqlStore.channel_prefix``)."""

    JOBS = "jobs"
    """Jobs became claimable; payload: the node, or ``*`` for any."""
    JOB = "job"
    """A job's status changed; payload: its id."""
    KEYS = "keys"
    """An API key was revoked; payload: its id."""


class SqlStore:
    """Implements ``vpsnap.domain.ports.Store``.

    On PostgreSQL every change of a job's status, every job that becomes claimable and every
    key revocation also sends a NOTIFY from inside its transaction (delivered at commit, never
    for a rollback): other processes' long-polls, agents and key caches wake on it
    (``vpsnap.jobs.signals.PgListener``). Channel names carry ``channel_prefix``, so separate
    deployments (or test schemas) in one database do not wake each other.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        url: str | None = None,
        channel_prefix: str = "vpsnap",
        schema: str | None = None,
    ) -> None:
        self.engine = engine
        self.url = url
        self.channel_prefix = channel_prefix
        self._bulk_engine = engine.execution_options(**{_BULK: True})
        self._notifies = engine.dialect.name == "postgresql"
        read_options: dict[str, Any] = {_READ_ONLY: True}
        if self._notifies:
            # READ COMMITTED gives every statement its own snapshot, in a transaction or not:
            # a read needs no BEGIN and COMMIT (two round trips fewer).
            read_options["isolation_level"] = "AUTOCOMMIT"
        self._read_engine = engine.execution_options(**read_options)
        self._small_read_engine = self._read_engine
        # Small reads on connections of vpsnap's own (store.small_reads); None: the engine's.
        self._sqlite_reads: SqliteReadPool | None = None
        self._pg_reads: PgReadPool | None = None
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            # What small transactions run through SQLAlchemy (statements not prebuilt).
            self._small_read_engine = _inline_read_engine(engine.url)
            self._sqlite_reads = SqliteReadPool(database)
        elif self._notifies:
            settings = {"search_path": schema} if schema is not None else None
            connect_args = pg_connect_args(engine.dialect, engine.url, settings)

            async def connect() -> asyncpg.Connection:
                import asyncpg  # noqa: PLC0415 - PostgreSQL only

                connection: asyncpg.Connection = await asyncpg.connect(**connect_args)
                return connection

            self._pg_reads = PgReadPool(connect)

    @classmethod
    def from_url(
        cls, url: str, *, schema: str | None = None, busy_timeout_seconds: float = 15.0
    ) -> SqlStore:
        """A store on ``url`` (``create_engine`` says what ``busy_timeout_seconds`` is)."""
        prefix = f"vpsnap_{schema}" if schema else "vpsnap"
        engine = create_engine(url, schema=schema, busy_timeout_seconds=busy_timeout_seconds)
        return cls(engine, url=url, channel_prefix=prefix, schema=schema)

    @property
    def is_postgres(self) -> bool:
        return self._notifies

    def channel(self, channel: Channel) -> str:
        return f"{self.channel_prefix}_{channel.value}"

    @asynccontextmanager
    async def transaction(
        self, *, read_only: bool = False, small: bool = False, bulk: bool = False
    ) -> AsyncIterator[SqlTransaction]:
        """One transaction; ``read_only`` ones must not write (SQLite would then fail them).

        ``small`` (with ``read_only``): a few statements, each reading a bounded number of
        rows through an index (a page of VPSes, one VPS's snapshots, a key by its hash).
        They run on connections of the store's own below SQLAlchemy (``store.small_reads``,
        ``SmallReadTransaction``): on SQLite on the calling thread, on PostgreSQL one round
        trip per statement (docs/performance.md, "Reads, fourth round"); anything that may
        scan goes without ``small``.
        ``bulk`` (a write transaction of long statements, e.g. a sweep's batch): on SQLite its
        statements stay on aiosqlite's thread instead of running inline after ``BEGIN
        IMMEDIATE`` (``store.sqlite_connection``), so they never stall the event loop.
        """
        if small and not read_only:
            raise ValueError("a small transaction is a read-only one")
        if small:
            engine = self._small_read_engine
        elif read_only:
            engine = self._read_engine
        else:
            engine = self._bulk_engine if bulk else self.engine
        # What a failure means depends on how far the transaction got (DatabaseUnavailable:
        # nothing took effect, retry later; anything else stays what it is).
        reached = "connect"
        try:
            if small and self._sqlite_reads is not None:
                async with _sqlite_small_read(
                    self._sqlite_reads, self.engine.dialect, engine
                ) as tx:
                    reached = "body"
                    yield tx
                    reached = "commit"
            elif small and self._pg_reads is not None:
                async with _pg_small_read(self._pg_reads, self.engine.dialect, engine) as tx:
                    reached = "body"
                    yield tx
                    reached = "commit"
            else:
                async with engine.begin() as conn:
                    reached = "body"
                    yield SqlTransaction(conn, self.channel_prefix if self._notifies else None)
                    reached = "commit"
        except (sa.exc.DBAPIError, OSError) as exc:
            if not _nothing_took_effect(exc, reached, read_only=read_only):
                raise
            raise DatabaseUnavailable(
                "The database did not answer in time; nothing was done. Retry later.",
                retry_after=DATABASE_RETRY_AFTER_SECONDS,
                log_detail=f"{type(exc).__name__} during {reached}: {exc}",
            ) from exc

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every connection (the small reads' and the engines')."""
        for pool in (self._sqlite_reads, self._pg_reads):
            if pool is not None:
                await pool.close()
        if self._small_read_engine is not self._read_engine:
            await self._small_read_engine.dispose()
        await self.engine.dispose()


DATABASE_RETRY_AFTER_SECONDS = 2
"""``Retry-After`` of a ``database_unavailable`` answer: a lock held past the busy timeout or a
restarting PostgreSQL is usually over within seconds."""


_SERVER_GOING_AWAY = frozenset({"57P01", "57P02", "57P03"})
"""PostgreSQL's admin_shutdown, crash_shutdown and cannot_connect_now (SQLSTATE class 57,
PostgreSQL's "Appendix A. Error Codes"): a restarting server sends the FATAL to every
connection, and the next statement raises it, possibly before the driver has seen the close
(asyncpg's ``is_closed()``, which SQLAlchemy's disconnect detection asks, still False). The
database is going away, nothing of the statement took effect: unavailable, not a 500. Both
SQLAlchemy's translated errors and the small reads' (``orig`` is asyncpg's) carry ``sqlstate``."""


def _nothing_took_effect(exc: BaseException, reached: str, *, read_only: bool) -> bool:
    """Whether ``exc``, raised when a transaction had ``reached`` "connect", "body" or
    "commit", is the database being unavailable with nothing committed.

    - Connecting: any ``OSError`` (refused, reset, timed out) or database error.
    - The body: a lost or closed connection (SQLAlchemy's disconnect detection, or the
      driver's ``InterfaceError``), a server shutting down (``_SERVER_GOING_AWAY``) or
      SQLite's "database is locked" past the busy timeout;
      never an ``OSError`` (the block may call other things), nor any other SQLite error ("no
      such table", "disk I/O error": an operator must act, retrying cannot help), nor an
      integrity or programming error (a conflict or a bug). The transaction rolls back.
    - The commit of a write: never. A connection lost while ``COMMIT`` was on its way may
      have committed; saying "nothing was done" could make a client repeat a change. A
      read-only transaction has nothing to commit, so its commit is like its body.
    """
    if reached == "connect":
        return True
    if reached == "commit" and not read_only:
        return False
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, sa.exc.InterfaceError):
        return True
    if getattr(exc.orig, "sqlstate", None) in _SERVER_GOING_AWAY:
        return True
    # sqlite3's message for SQLITE_BUSY and SQLITE_LOCKED (sqlite3.c, sqlite3ErrStr).
    return isinstance(exc, sa.exc.OperationalError) and "is locked" in str(exc.orig)


def _jobs_since(vps_ids: Sequence[str], since: datetime) -> sa.Select[str]:
    """The VPSes of ``vps_ids`` with a job created at or after ``since``; read through
    ``ix_jobs_vps_created_at`` (migration 0015), so the cost is the recent jobs, not the kept
    history (tests/store/test_query_plans.py)."""
    return (
        sa.select(jobs.c.vps_id)
        .distinct()
        .where(jobs.c.vps_id.in_(vps_ids), jobs.c.created_at >= since)
    )


def _account(row: Row) -> Account:
    return Account(id=row["id"], name=row["name"], created_at=row["created_at"])


def _api_key(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        account_id=row["account_id"],
        scopes=frozenset(row["scopes"].split(",")),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        name=row["name"],
    )


def _user(row: Row) -> User:
    return User(
        id=row["id"],
        account_id=row["account_id"],
        email=row["email"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
    )


_VPS_COLUMNS = (
    "id",
    "account_id",
    "name",
    "name_key",
    "node",
    "disks",
    "snapshot_slots",
    "service_status",
    "primary_ip",
    "operating_system",
    "resources",
    "billing",
    "current_snapshot",
    "created_at",
    "plan",
    "machine",
    "power_state",
    "power_state_at",
    "vm_facts",
)
# _vps unpacks a row by position: the table's column order is checked once, here.
assert tuple(vps.c.keys()) == _VPS_COLUMNS, "store/tables.py changed the vps columns"


_E = TypeVar("_E", bound=StrEnum)


def _members(enum: type[_E]) -> Callable[[Any], _E]:
    """``enum(value)`` by a dict lookup: calling the enum class costs ten times more (every
    row of a listing decodes two or three). A value that is not a member's goes to the class,
    so it raises what ``enum(value)`` raises."""
    members: dict[Any, _E] = {member.value: member for member in enum}

    def member(value: Any) -> _E:
        try:
            found = members.get(value)
        except TypeError:  # unhashable: the class's own error
            found = None
        return enum(value) if found is None else found

    return member


_service_status = _members(ServiceStatus)
_power_state = _members(PowerState)
_snapshot_status = _members(SnapshotStatus)
_snapshot_origin = _members(SnapshotOrigin)
_consistency = _members(Consistency)


def _vps(row: Sequence[Any]) -> Vps:
    """A ``vps`` row (every column, in the table's order; decoded by SQLAlchemy's result or by
    ``_decoded_rows``) as the domain object."""
    (
        id_,
        account_id,
        name,
        _name_key,
        node,
        disks,
        snapshot_slots,
        service_status,
        primary_ip,
        os_data,
        resources,
        billing,
        current_snapshot,
        created_at,
        plan,
        machine,
        power_state,
        power_state_at,
        vm_facts,
    ) = row
    return Vps(
        id=id_,
        account_id=account_id,
        name=name,
        node=node,
        disks=tuple(disks),
        snapshot_slots=snapshot_slots,
        service_status=_service_status(service_status),
        created_at=created_at,
        primary_ip=primary_ip,
        operating_system=OperatingSystem(**os_data) if os_data else None,
        resources=Resources(**resources),
        billing=Billing(**billing) if billing else None,
        current_snapshot=current_snapshot,
        plan=plan,
        machine=machine_from_json(machine),
        power_state=_power_state(power_state) if power_state else None,
        power_state_at=power_state_at,
        vm_facts=VmFacts.from_json(vm_facts),
    )


def _vps_values(item: Vps) -> dict[str, Any]:
    return {
        "id": item.id,
        "account_id": item.account_id,
        "name": item.name,
        "name_key": item.name.lower(),
        "node": item.node,
        "disks": list(item.disks),
        "snapshot_slots": item.snapshot_slots,
        "service_status": item.service_status.value,
        "primary_ip": item.primary_ip,
        "operating_system": (
            dataclasses.asdict(item.operating_system) if item.operating_system else None
        ),
        "resources": dataclasses.asdict(item.resources),
        "billing": dataclasses.asdict(item.billing) if item.billing else None,
        "current_snapshot": item.current_snapshot,
        "created_at": item.created_at,
        "plan": item.plan,
        "machine": machine_to_json(item.machine),
    }


_SNAPSHOT_COLUMNS = (
    "vps_id",
    "name_key",
    "name",
    "description",
    "status",
    "origin",
    "consistency",
    "includes_memory_state",
    "parent_name",
    "created_at",
    "expires_at",
    "disk_created_at",
    "missing_since",
    "vm_config",
    "consistency_reason",
)
assert tuple(snapshots.c.keys()) == _SNAPSHOT_COLUMNS, "store/tables.py changed the columns"


def _snapshot(row: Sequence[Any]) -> Snapshot:
    """A ``snapshots`` row (every column, in the table's order; decoded by SQLAlchemy's result
    or by ``_decoded_rows``) as the domain object."""
    (
        vps_id,
        _name_key,
        name,
        description,
        status,
        origin,
        consistency,
        includes_memory_state,
        parent_name,
        created_at,
        expires_at,
        disk_created_at,
        missing_since,
        vm_config,
        consistency_reason,
    ) = row
    return Snapshot(
        vps_id=vps_id,
        name=name,
        description=description,
        status=_snapshot_status(status),
        origin=_snapshot_origin(origin),
        consistency=_consistency(consistency),
        includes_memory_state=includes_memory_state,
        parent_name=parent_name,
        created_at=created_at,
        expires_at=expires_at,
        disk_created_at=disk_created_at,
        missing_since=missing_since,
        vm_config=VmConfig.from_json(vm_config),
        consistency_reason=consistency_reason,
    )


def _snapshot_values(item: Snapshot) -> dict[str, Any]:
    return {
        "vps_id": item.vps_id,
        "name_key": name_key(item.name),
        "name": item.name,
        "description": item.description,
        "status": item.status.value,
        "origin": item.origin.value,
        "consistency": item.consistency.value,
        "includes_memory_state": item.includes_memory_state,
        "parent_name": item.parent_name,
        "created_at": item.created_at,
        "expires_at": item.expires_at,
        "disk_created_at": item.disk_created_at,
        "missing_since": item.missing_since,
        "vm_config": item.vm_config.to_json() if item.vm_config else None,
        "consistency_reason": item.consistency_reason,
    }


def _job(row: Row) -> Job:
    return Job(
        id=row["id"],
        account_id=row["account_id"],
        vps_id=row["vps_id"],
        type=JobType(row["type"]),
        status=JobStatus(row["status"]),
        snapshot_name=row["snapshot_name"],
        payload=row["payload"],
        progress=row["progress"],
        result=row["result"],
        error=row["error"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        lane=JobLane(row["lane"]),
        journal=row["journal"] or {},
        request_id=row["request_id"],
        created_by=Actor.from_json(row["created_by"]) if row["created_by"] else None,
        node=row["node"],
    )


def _job_values(item: Job, actors: dict[Actor, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A job's column values. ``actors``: a memo shared by the rows of one multi-row insert, so
    that the jobs of one actor carry the same ``created_by`` object, which the bulk insert
    serialises once (``store.bulk``), as it does the shared empty payload."""
    return {
        "id": item.id,
        "account_id": item.account_id,
        "vps_id": item.vps_id,
        "type": item.type.value,
        "status": item.status.value,
        "snapshot_name": item.snapshot_name,
        "payload": item.payload or _NO_PAYLOAD,
        "progress": item.progress,
        "result": item.result,
        "error": item.error,
        "attempts": item.attempts,
        "created_at": item.created_at,
        "started_at": item.started_at,
        "finished_at": item.finished_at,
        "lease_owner": item.lease_owner,
        "lease_expires_at": item.lease_expires_at,
        "lane": item.lane.value,
        "journal": item.journal or None,
        "request_id": item.request_id,
        "created_by": _actor_json(item.created_by, actors),
    }


def _actor_json(actor: Actor | None, memo: dict[Actor, dict[str, Any]] | None) -> Any:
    if actor is None:
        return None
    if memo is None:
        return actor.as_json()
    found = memo.get(actor)
    if found is None:
        found = memo[actor] = actor.as_json()
    return found


# A job without a payload stores {} (the one object: never mutated, only serialised).
_NO_PAYLOAD: dict[str, Any] = {}


def _node(row: Mapping[str, Any]) -> Node:
    return Node(
        name=row["name"],
        version=row["version"],
        started_at=row["started_at"],
        last_seen_at=row["last_seen_at"],
        drained=row["drained"],
        agent=row["agent"],
    )


def _write_intent(row: Row) -> WriteIntent:
    return WriteIntent(
        id=row["id"],
        vps_id=row["vps_id"],
        name=row["name"],
        job_id=row["job_id"],
        disks=tuple(row["disks"]),
        state=IntentState(row["state"]),
        created_at=row["created_at"],
        closed_at=row["closed_at"],
    )


class SqlTransaction(OperationsQueries):
    """Implements ``vpsnap.domain.ports.Transaction`` on one connection inside BEGIN/COMMIT."""

    def __init__(self, conn: AsyncConnection, notify_prefix: str | None = None) -> None:
        self.conn = conn
        self._notify_prefix = notify_prefix

    async def _notify(self, channel: Channel, payload: str) -> None:
        # Transactional: PostgreSQL delivers it at commit, and not at all on rollback.
        if self._notify_prefix is not None:
            await self.conn.execute(
                _NOTIFY,
                {"b_channel": f"{self._notify_prefix}_{channel.value}", "b_payload": payload},
            )

    async def _write_notifying(
        self,
        plain: RawWrite,
        notifying: RawWrite,
        params: Mapping[str, Any],
        channel: Channel,
        payload: str,
    ) -> int:
        """Run a conditional write; on PostgreSQL ``notifying`` (the same statement with
        ``RETURNING pg_notify(...)``: one NOTIFY per row written, in this transaction, so none
        when nothing was). Returns the number of rows written."""
        if self._notify_prefix is None:
            return int((await plain.run(self.conn, params)).rowcount)
        channel_name = f"{self._notify_prefix}_{channel.value}"
        result = await notifying.run(
            self.conn, {**params, "b_channel": channel_name, "b_payload": payload}
        )
        return len(result.all())

    async def _one(self, query: sa.Select[Any], params: dict[str, Any] | None = None) -> Row | None:
        result = await self.conn.execute(query, params)
        row: Row | None = result.mappings().first()
        return row

    async def _all(self, query: sa.Select[Any], params: dict[str, Any] | None = None) -> list[Row]:
        result = await self.conn.execute(query, params)
        return list(result.mappings().all())

    async def _raw_all(
        self, query: RawSelect, params: Mapping[str, Any], limit: int | None = None
    ) -> list[list[Any]]:
        # Through _raw_rows: a small read transaction runs the statement its own way.
        return query.decode(self.conn.dialect, await self._raw_rows(query, params, limit))

    async def _raw_rows(
        self, query: RawSelect, params: Mapping[str, Any], limit: int | None = None
    ) -> Sequence[Sequence[Any]]:
        return await fetch_rows(self.conn, query, params, limit)

    async def _raw_records(
        self, query: RawSelect, params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return query.records(self.conn.dialect, await self._raw_rows(query, params))

    # accounts and keys ------------------------------------------------------------------------

    async def add_account(self, account: Account) -> None:
        try:
            await self.conn.execute(
                accounts.insert().values(
                    id=account.id, name=account.name, created_at=account.created_at
                )
            )
        except IntegrityError as exc:
            raise Conflict(f"an account named {account.name!r} already exists") from exc

    async def find_account_by_name(self, name: str) -> Account | None:
        row = await self._one(sa.select(accounts).where(accounts.c.name == name))
        return _account(row) if row else None

    async def list_accounts(self) -> list[Account]:
        return [_account(r) for r in await self._all(sa.select(accounts).order_by(accounts.c.id))]

    async def add_api_key(self, key: ApiKey, secret_hash: str) -> None:
        await self.conn.execute(
            api_keys.insert().values(
                id=key.id,
                account_id=key.account_id,
                secret_hash=secret_hash,
                scopes=",".join(sorted(key.scopes)),
                created_at=key.created_at,
                expires_at=key.expires_at,
                revoked_at=key.revoked_at,
                name=key.name,
            )
        )

    async def find_api_key_by_hash(self, secret_hash: str) -> ApiKey | None:
        row = await self._one(_FIND_KEY, {"b_hash": secret_hash})
        return _api_key(row) if row else None

    async def revoke_api_key(self, key_id: str, at: datetime) -> bool:
        result = await self.conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        if result.rowcount:
            await self._notify(Channel.KEYS, key_id)
        return result.rowcount > 0

    # dashboard users and sessions -------------------------------------------------------------

    async def get_account(self, account_id: str) -> Account | None:
        row = await self._one(sa.select(accounts).where(accounts.c.id == account_id))
        return _account(row) if row else None

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        row = await self._one(sa.select(api_keys).where(api_keys.c.id == key_id))
        return _api_key(row) if row else None

    async def add_user(self, user: User, password_hash: str) -> None:
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(
                    users.insert().values(
                        id=user.id,
                        account_id=user.account_id,
                        email=user.email,
                        password_hash=password_hash,
                        role=user.role.value,
                        created_at=user.created_at,
                        disabled_at=user.disabled_at,
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"a user with the email {user.email!r} already exists") from exc

    async def find_user_by_email(self, email: str) -> StoredUser | None:
        row = await self._one(_FIND_USER, {"b_email": email})
        return StoredUser(_user(row), row["password_hash"]) if row else None

    async def list_users(self, account_id: str | None) -> list[User]:
        query = sa.select(users).order_by(users.c.email)
        if account_id is not None:
            query = query.where(users.c.account_id == account_id)
        return [_user(r) for r in await self._all(query)]

    async def set_user_password(self, user_id: str, password_hash: str) -> None:
        await self.conn.execute(
            users.update().where(users.c.id == user_id).values(password_hash=password_hash)
        )

    async def disable_user(self, user_id: str, at: datetime) -> bool:
        result = await self.conn.execute(
            users.update()
            .where(users.c.id == user_id, users.c.disabled_at.is_(None))
            .values(disabled_at=at)
        )
        return result.rowcount > 0

    async def add_session(self, session: Session, token_hash: str) -> None:
        await self.conn.execute(
            sessions.insert().values(
                id=session.id,
                user_id=session.user_id,
                token_hash=token_hash,
                created_at=session.created_at,
                last_seen_at=session.last_seen_at,
            )
        )

    async def find_session(self, token_hash: str) -> StoredSession | None:
        row = await self._one(_FIND_SESSION, {"b_hash": token_hash})
        if row is None:
            return None
        session = Session(
            id=row["session_id"],
            user_id=row["id"],
            created_at=row["session_created_at"],
            last_seen_at=row["last_seen_at"],
        )
        return StoredSession(session, _user(row))

    async def touch_session(self, session_id: str, at: datetime) -> None:
        await self.conn.execute(
            sessions.update().where(sessions.c.id == session_id).values(last_seen_at=at)
        )

    async def delete_session(self, session_id: str) -> None:
        await self.conn.execute(sessions.delete().where(sessions.c.id == session_id))

    async def delete_user_sessions(self, user_id: str) -> int:
        result = await self.conn.execute(sessions.delete().where(sessions.c.user_id == user_id))
        return int(result.rowcount)

    async def purge_sessions(self, seen_before: datetime, created_before: datetime) -> int:
        result = await self.conn.execute(
            sessions.delete().where(
                sa.or_(
                    sessions.c.last_seen_at < seen_before,
                    sessions.c.created_at < created_before,
                )
            )
        )
        return int(result.rowcount)

    async def list_api_keys(self, account_id: str | None) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        return [_api_key(r) for r in await self._all(query)]

    async def record_key_use(self, key_id: str, at: datetime, *, not_since: datetime) -> None:
        await self.conn.execute(
            api_keys.update()
            .where(
                api_keys.c.id == key_id,
                sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < not_since),
            )
            .values(last_used_at=at)
        )

    # inventory --------------------------------------------------------------------------------

    async def add_vps(self, vps_item: Vps, disk_files: Sequence[DiskFile] | None = None) -> None:
        """Insert the VPS and index its disks (``vps_disks``); ``disk_files`` are the disks as
        the service identified them, in ``vps.disks`` order (default: the paths as given).
        Raises ``Conflict`` for a taken name, ``DiskAlreadyRegistered`` when the store already
        holds one of the disk files (a caller that skipped the service's check, or a race)."""
        try:
            await self.conn.execute(vps.insert(), _vps_values(vps_item))
        except IntegrityError as exc:
            raise Conflict(f"the account already has a VPS named {vps_item.name!r}") from exc
        await self._index_disks(vps_item, disk_files)

    async def _index_disks(self, vps_item: Vps, disk_files: Sequence[DiskFile] | None) -> None:
        files = (
            list(disk_files) if disk_files is not None else [DiskFile(d) for d in vps_item.disks]
        )
        if len(files) != len(vps_item.disks):
            raise ValueError("one DiskFile per disk of the VPS")
        if not files:
            return
        try:
            # A savepoint: a refused disk must not end the caller's transaction (PostgreSQL).
            async with self.conn.begin_nested():
                await self.conn.execute(
                    vps_disks.insert(),
                    [
                        {
                            "vps_id": vps_item.id,
                            "position": position,
                            "node": vps_item.node,
                            "path": file.path,
                            "path_key": file.path_key,
                            "file_id": file.file_id,
                        }
                        for position, file in enumerate(files)
                    ],
                )
        except IntegrityError as exc:
            raise DiskAlreadyRegistered(
                f"a disk of {vps_item.name!r} is already registered to a VPS "
                f"({', '.join(vps_item.disks)})"
            ) from exc

    async def disk_owners(self, node: str, files: Sequence[DiskFile]) -> list[DiskOwner]:
        """The registered disks of ``node`` that are one of ``files`` (same real path, or same
        device and inode), with the VPS and account they belong to."""
        if not files:
            return []
        keys = [f.path_key for f in files]
        file_ids = [f.file_id for f in files if f.file_id is not None]
        matches: sa.ColumnElement[bool] = vps_disks.c.path_key.in_(keys)
        if file_ids:
            matches = sa.or_(matches, vps_disks.c.file_id.in_(file_ids))
        query = (
            sa.select(
                vps_disks.c.path,
                vps_disks.c.file_id,
                vps.c.id,
                vps.c.name,
                accounts.c.name.label("account_name"),
            )
            .join(vps, vps.c.id == vps_disks.c.vps_id)
            .join(accounts, accounts.c.id == vps.c.account_id)
            .where(vps_disks.c.node == node, matches)
            .order_by(vps_disks.c.vps_id, vps_disks.c.position)
        )
        return [
            DiskOwner(DiskFile(r["path"], r["file_id"]), r["id"], r["name"], r["account_name"])
            for r in await self._all(query)
        ]

    async def get_vps(self, vps_id: str, *, lock: bool = False) -> Vps | None:
        query = _GET_VPS_LOCKED_RAW if lock else _GET_VPS_RAW
        rows = await self._raw_all(query, {"b_id": vps_id})
        return _vps(rows[0]) if rows else None

    async def find_vps_by_name(self, account_id: str, name: str) -> Vps | None:
        query = sa.select(vps).where(vps.c.account_id == account_id, vps.c.name_key == name.lower())
        row = (await self.conn.execute(query)).first()
        return _vps(row) if row else None

    async def list_vps(
        self, account_id: str | None, flt: VpsFilter, after_id: str | None, limit: int
    ) -> list[Vps]:
        params: dict[str, Any] = {
            "b_account": account_id,
            "b_name": flt.name.lower() if flt.name is not None else None,
            "b_ip": flt.primary_ip,
            "b_node": flt.node,
            "b_after": after_id,
        }
        query = _list_vps_query(tuple(params[name] is not None for name in _LIST_VPS_FILTERS))
        return [_vps(r) for r in await self._raw_all(query, params, limit)]

    async def record_vm_facts(self, vps_id: str, facts: VmFacts | None) -> None:
        await self.conn.execute(
            vps.update()
            .where(vps.c.id == vps_id)
            .values(vm_facts=facts.to_json() if facts is not None else None)
        )

    async def record_power_state(self, vps_id: str, state: PowerState, at: datetime) -> bool:
        result = await self.conn.execute(
            vps.update()
            .where(
                vps.c.id == vps_id,
                sa.or_(vps.c.power_state.is_(None), vps.c.power_state != state.value),
                # A read that began before the stored observation was made is older news.
                sa.or_(vps.c.power_state_at.is_(None), vps.c.power_state_at <= at),
            )
            .values(power_state=state.value, power_state_at=at)
        )
        return bool(result.rowcount)

    # nodes ------------------------------------------------------------------------------------

    async def heartbeat(self, node: Node) -> None:
        values = {
            "version": node.version,
            "agent": node.agent,
            "started_at": node.started_at,
            "last_seen_at": node.last_seen_at,
        }
        updated = await self.conn.execute(
            nodes.update().where(nodes.c.name == node.name).values(**values)
        )
        if not updated.rowcount:
            await self.conn.execute(
                nodes.insert().values(name=node.name, drained=node.drained, **values)
            )

    async def get_node(self, name: str) -> Node | None:
        rows = await self._raw_records(_GET_NODE_RAW, {"b_name": name})
        return _node(rows[0]) if rows else None

    async def list_nodes(self) -> list[Node]:
        return [_node(r) for r in await self._all(sa.select(nodes).order_by(nodes.c.name))]

    async def set_node_drained(self, name: str, drained: bool) -> bool:
        result = await self.conn.execute(
            nodes.update().where(nodes.c.name == name).values(drained=drained)
        )
        return bool(result.rowcount)

    async def node_stats(self) -> dict[str, NodeStats]:
        counts = {
            r["node"]: r["n"]
            for r in await self._all(
                sa.select(vps.c.node, sa.func.count().label("n")).group_by(vps.c.node)
            )
        }
        waiting = {
            r["node"]: (r["n"], r["oldest"])
            for r in await self._all(
                sa.select(
                    jobs.c.node,
                    sa.func.count().label("n"),
                    sa.func.min(jobs.c.created_at).label("oldest"),
                )
                .where(jobs.c.status.in_([JobStatus.QUEUED.value, JobStatus.PENDING.value]))
                .group_by(jobs.c.node)
            )
        }
        names = set(counts) | set(waiting)
        stats = {}
        for name in names:
            queued, oldest = waiting.get(name, (0, None))
            if isinstance(oldest, str):  # SQLite returns min() of a timestamp as text
                oldest = datetime.fromisoformat(oldest)
            stats[name] = NodeStats(
                vps_count=counts.get(name, 0),
                queued_jobs=queued,
                oldest_queued_at=oldest.replace(tzinfo=UTC) if oldest is not None else None,
            )
        return stats

    async def unstarted_jobs(self, node: str, created_before: datetime, limit: int) -> list[Job]:
        query = (
            sa.select(jobs)
            .where(
                jobs.c.node == node,
                jobs.c.status.in_([JobStatus.QUEUED.value, JobStatus.PENDING.value]),
                jobs.c.created_at < created_before,
            )
            .order_by(jobs.c.created_at, jobs.c.id)
            .limit(limit)
        )
        return [_job(r) for r in await self._all(query)]

    async def fail_unstarted_job(self, job: Job) -> bool:
        result = await self.conn.execute(
            jobs.update()
            .where(
                jobs.c.id == job.id,
                jobs.c.status.in_([JobStatus.QUEUED.value, JobStatus.PENDING.value]),
            )
            .values(
                status=JobStatus.FAILED.value,
                error=job.error,
                finished_at=job.finished_at,
            )
        )
        if result.rowcount:
            await self._notify(Channel.JOB, job.id)
        return bool(result.rowcount)

    async def set_current_snapshot(self, vps_id: str, name: str | None) -> None:
        await _SET_CURRENT_RAW.run(self.conn, {"b_id": vps_id, "b_name": name})

    async def update_vps(self, vps_item: Vps, disk_files: Sequence[DiskFile] | None = None) -> None:
        """Write the operator-editable fields. ``disk_files`` (the disks as the service
        identified them) re-index the VPS's disks, as a change of disks or node needs; the
        store refuses a disk another VPS of the node holds (``DiskAlreadyRegistered``)."""
        values = _vps_values(vps_item)
        editable = ("name", "name_key", "node", "disks", "snapshot_slots", "primary_ip", "machine")
        try:
            await self.conn.execute(
                vps.update().where(vps.c.id == vps_item.id).values({k: values[k] for k in editable})
            )
        except IntegrityError as exc:
            raise Conflict(f"the account already has a VPS named {vps_item.name!r}") from exc
        if disk_files is not None:
            await self.conn.execute(vps_disks.delete().where(vps_disks.c.vps_id == vps_item.id))
            await self._index_disks(vps_item, disk_files)

    async def remove_vps(self, vps_id: str) -> None:
        # Children first: every one of them references the VPS row.
        await self.conn.execute(vps_disks.delete().where(vps_disks.c.vps_id == vps_id))
        await self.conn.execute(write_intents.delete().where(write_intents.c.vps_id == vps_id))
        await self.conn.execute(jobs.delete().where(jobs.c.vps_id == vps_id))
        await self.conn.execute(snapshots.delete().where(snapshots.c.vps_id == vps_id))
        await self.conn.execute(
            snapshot_schedules.delete().where(snapshot_schedules.c.vps_id == vps_id)
        )
        await self.conn.execute(vps.delete().where(vps.c.id == vps_id))

    # snapshots --------------------------------------------------------------------------------

    async def list_snapshots(self, vps_id: str) -> list[Snapshot]:
        return [_snapshot(r) for r in await self._raw_all(_LIST_SNAPSHOTS_RAW, {"b_vps": vps_id})]

    async def get_vps_with_snapshots(self, vps_id: str) -> tuple[Vps, list[Snapshot]] | None:
        rows = await self._raw_rows(_GET_VPS_WITH_SNAPSHOTS_RAW, {"b_id": vps_id})
        if not rows:
            return None
        dialect, decoder = self.conn.dialect, _GET_VPS_WITH_SNAPSHOTS_RAW
        item = _vps(decoder.decode(dialect, rows[:1])[0])
        # The snapshot part of a row is NULL only when the VPS has none (vps_id is its key).
        found = [row for row in rows if row[len(vps.c)] is not None]
        return item, [_snapshot(row) for row in decoder.decode(dialect, found, part=1)]

    async def list_snapshots_of(self, vps_ids: Sequence[str]) -> dict[str, list[Snapshot]]:
        found: dict[str, list[Snapshot]] = {vps_id: [] for vps_id in vps_ids}
        if not vps_ids:
            return found
        query = (
            sa.select(snapshots)
            .where(snapshots.c.vps_id.in_(vps_ids))
            .order_by(snapshots.c.vps_id, snapshots.c.created_at, snapshots.c.name_key)
        )
        for row in await self.conn.execute(query):
            found[row[0]].append(_snapshot(row))
        return found

    async def get_snapshot(self, vps_id: str, name: str) -> Snapshot | None:
        params = {"b_vps": vps_id, "b_key": name_key(name)}
        rows = await self._raw_all(_GET_SNAPSHOT_RAW, params)
        return _snapshot(rows[0]) if rows else None

    async def add_snapshot(self, snapshot: Snapshot) -> None:
        try:
            await insert_rows(self.conn, snapshots, [_snapshot_values(snapshot)])
        except IntegrityError as exc:
            raise SnapshotNameTaken(
                f"A snapshot named {snapshot.name!r} already exists on this VPS."
            ) from exc

    async def update_snapshot(self, snapshot: Snapshot) -> None:
        values = _snapshot_values(snapshot)
        values.update(b_vps=snapshot.vps_id, b_key=values["name_key"])
        await self.conn.execute(_UPDATE_SNAPSHOT, values)

    async def set_snapshot_status(
        self, vps_id: str, name: str, status: SnapshotStatus, *, only_from: SnapshotStatus
    ) -> None:
        await self.conn.execute(
            _SET_SNAPSHOT_STATE,
            {
                "b_vps": vps_id,
                "b_key": name_key(name),
                "b_status": status.value,
                "b_from": only_from.value,
            },
        )

    async def record_snapshot_taken(
        self,
        vps_id: str,
        name: str,
        consistency: Consistency,
        *,
        includes_memory_state: bool,
        parent_name: str | None,
        disk_created_at: datetime | None = None,
        vm_config: VmConfig | None = None,
        consistency_reason: str | None = None,
    ) -> None:
        await _RECORD_TAKEN_RAW.run(
            self.conn,
            {
                "b_vps": vps_id,
                "b_key": name_key(name),
                "b_consistency": consistency.value,
                "b_reason": consistency_reason,
                "b_memory": includes_memory_state,
                "b_parent": parent_name,
                "b_disk_created": disk_created_at,
                "b_vm_config": vm_config.to_json() if vm_config else None,
            },
        )

    async def set_snapshot_missing_since(self, vps_id: str, name: str, at: datetime | None) -> None:
        await self.conn.execute(
            _UPDATE_SNAPSHOT,
            {"b_vps": vps_id, "b_key": name_key(name), "missing_since": at},
        )

    async def remove_snapshot(self, vps_id: str, name: str) -> None:
        key = name_key(name)
        row = await self._one(_GET_SNAPSHOT, {"b_vps": vps_id, "b_key": key})
        if row is None:
            return
        # The chain stays whole (as Proxmox re-links on delete): the removed snapshot's
        # children and the VPS's current pointer move to its parent, which is older still.
        parent = row["parent_name"]
        await self.conn.execute(
            snapshots.update()
            .where(
                snapshots.c.vps_id == vps_id,
                sa.func.lower(snapshots.c.parent_name) == key,
            )
            .values(parent_name=parent)
        )
        await self.conn.execute(
            vps.update()
            .where(vps.c.id == vps_id, sa.func.lower(vps.c.current_snapshot) == key)
            .values(current_snapshot=parent)
        )
        await self.conn.execute(_REMOVE_SNAPSHOT, {"b_vps": vps_id, "b_key": key})

    # write intents ------------------------------------------------------------------------------

    async def add_write_intent(self, intent: WriteIntent) -> None:
        row = {
            "id": intent.id,
            "vps_id": intent.vps_id,
            "name_key": name_key(intent.name),
            "name": intent.name,
            "job_id": intent.job_id,
            "disks": list(intent.disks),
            "state": intent.state.value,
            "created_at": intent.created_at,
            "closed_at": intent.closed_at,
        }
        await insert_rows(self.conn, write_intents, [row])

    async def close_write_intents(
        self, job_id: str, state: IntentState, at: datetime, *, name: str | None = None
    ) -> int:
        params = {"b_job": job_id, "b_state": state.value, "b_at": at}
        if name is None:
            result = await _CLOSE_INTENTS.run(self.conn, params)
        else:
            result = await _CLOSE_INTENTS_NAMED.run(self.conn, {**params, "b_key": name_key(name)})
        return int(result.rowcount)

    async def open_write_intents(self, vps_id: str) -> list[WriteIntent]:
        query = (
            sa.select(write_intents)
            .where(
                write_intents.c.vps_id == vps_id,
                write_intents.c.state == IntentState.OPEN.value,
            )
            .order_by(write_intents.c.created_at, write_intents.c.id)
        )
        return [_write_intent(r) for r in await self._all(query)]

    async def open_write_intents_of(self, vps_ids: Sequence[str]) -> dict[str, list[WriteIntent]]:
        found: dict[str, list[WriteIntent]] = {vps_id: [] for vps_id in vps_ids}
        if not vps_ids:
            return found
        query = (
            sa.select(write_intents)
            .where(
                write_intents.c.vps_id.in_(vps_ids),
                write_intents.c.state == IntentState.OPEN.value,
            )
            .order_by(write_intents.c.created_at, write_intents.c.id)
        )
        for row in await self._all(query):
            found[row["vps_id"]].append(_write_intent(row))
        return found

    # jobs -------------------------------------------------------------------------------------

    async def add_job(self, job: Job, node: str) -> None:
        await insert_rows(self.conn, jobs, [{"node": node, **_job_values(job)}])
        if job.status is JobStatus.QUEUED:
            await self._notify(Channel.JOBS, node)

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._one(_GET_JOB, {"b_id": job_id})
        return _job(row) if row else None

    async def update_job(self, job: Job) -> None:
        await self.conn.execute(_UPDATE_JOB, {"b_id": job.id, **_job_values(job)})
        await self._notify(Channel.JOB, job.id)
        if job.status is JobStatus.QUEUED:
            await self._notify(Channel.JOBS, job.node or "*")

    async def finish_job(self, job: Job, worker: str) -> bool:
        params = {
            "b_id": job.id,
            "b_worker": worker,
            "b_status": job.status.value,
            "b_progress": job.progress,
            "b_result": job.result,
            "b_error": job.error,
            "b_finished": job.finished_at,
            "b_journal": job.journal or None,
        }
        written = await self._write_notifying(
            _FINISH_JOB_RAW, _FINISH_JOB_NOTIFY_RAW, params, Channel.JOB, job.id
        )
        return written > 0

    async def record_job_journal(self, job_id: str, worker: str, journal: dict[str, Any]) -> bool:
        params = {"b_id": job_id, "b_worker": worker, "journal": journal}
        return (await _RECORD_JOURNAL_RAW.run(self.conn, params)).rowcount > 0

    async def count_unfinished_jobs(self, vps_id: str) -> int:
        return int((await self._raw_rows(_COUNT_UNFINISHED_RAW, {"b_vps": vps_id}))[0][0])

    async def has_active_job(self, vps_id: str) -> bool:
        return await self._one(_ACTIVE_JOB, {"b_vps": vps_id}) is not None

    async def add_jobs(self, items: Sequence[Job]) -> None:
        if not items:
            return
        actors: dict[Actor, dict[str, Any]] = {}
        await insert_rows(
            self.conn, jobs, [{"node": j.node, **_job_values(j, actors)} for j in items]
        )
        for node in sorted({j.node or "*" for j in items if j.status is JobStatus.QUEUED}):
            await self._notify(Channel.JOBS, node)

    async def vps_with_jobs_since(self, vps_ids: Sequence[str], since: datetime) -> set[str]:
        if not vps_ids:
            return set()
        return {row[0] for row in await self.conn.execute(_jobs_since(vps_ids, since))}

    async def vps_with_unfinished_jobs(self, vps_ids: Sequence[str]) -> set[str]:
        if not vps_ids:
            return set()
        return {row[0] for row in await self.conn.execute(_busy_vps(vps_ids))}

    async def list_jobs(
        self,
        account_id: str,
        *,
        vps_id: str | None,
        status: JobStatus | None,
        before_id: str | None,
        limit: int,
    ) -> list[Job]:
        query = (
            sa.select(jobs)
            .where(jobs.c.account_id == account_id)
            .order_by(jobs.c.id.desc())
            .limit(limit)
        )
        if vps_id is not None:
            query = query.where(jobs.c.vps_id == vps_id)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if before_id is not None:
            query = query.where(jobs.c.id < before_id)
        return [_job(r) for r in await self._all(query)]

    async def next_pending_job(self, vps_id: str) -> Job | None:
        rows = await self._raw_all(_NEXT_PENDING_RAW, {"b_vps": vps_id})
        return _job(dict(zip(_JOB_COLUMNS, rows[0], strict=True))) if rows else None

    async def jobs_for_snapshot(self, vps_id: str, snapshot_name: str) -> list[Job]:
        query = (
            sa.select(jobs)
            .where(jobs.c.vps_id == vps_id, jobs.c.snapshot_name == snapshot_name)
            .order_by(jobs.c.created_at, jobs.c.id)
        )
        return [_job(r) for r in await self._all(query)]

    async def has_queued_jobs(self, node: str) -> bool:
        return bool(await self._all(_ANY_QUEUED, {"b_node": node}))

    async def claim_jobs(self, request: ClaimRequest) -> list[Job]:
        wanted = sum(request.free.values())
        if wanted <= 0:
            return []
        # A few more candidates than free slots, so that jobs of an account at its share (or
        # of a full lane) can be passed over without a second round trip.
        params = {"b_node": request.node, "b_limit": wanted * 4 + 8}
        raw = await self._raw_rows(_CLAIM_CANDIDATES, params)
        width = len(_JOB_COLUMNS)
        decoded = _CLAIM_CANDIDATES.decode(self.conn.dialect, raw)
        candidates = [
            (_job(dict(zip(_JOB_COLUMNS, row, strict=True))), int(found[width]))
            for row, found in zip(decoded, raw, strict=True)
        ]
        # Jobs of the node's accounts already running (each candidate carries its account's).
        busy = {job.account_id: running for job, running in candidates}
        free = dict(request.free)
        claimed = []
        for job, _ in candidates:
            share = request.account_share.get(job.lane)
            if free.get(job.lane, 0) <= 0:
                continue
            if share is not None and busy.get(job.account_id, 0) >= share:
                continue
            taken = dataclasses.replace(
                job,
                status=JobStatus.IN_PROGRESS,
                attempts=job.attempts + 1,
                started_at=job.started_at or request.now,
                lease_owner=request.worker,
                lease_expires_at=request.lease_until,
            )
            await self._write_notifying(
                _CLAIM_JOB_RAW,
                _CLAIM_JOB_NOTIFY_RAW,
                {
                    "b_id": taken.id,
                    "b_attempts": taken.attempts,
                    "b_started": taken.started_at,
                    "b_worker": request.worker,
                    "b_until": request.lease_until,
                },
                Channel.JOB,
                taken.id,
            )
            claimed.append(taken)
            free[job.lane] -= 1
            busy[job.account_id] = busy.get(job.account_id, 0) + 1
        return claimed

    async def extend_lease(self, job_id: str, worker: str, lease_until: datetime) -> bool:
        result = await self.conn.execute(
            _EXTEND_LEASE, {"b_id": job_id, "b_worker": worker, "b_until": lease_until}
        )
        return result.rowcount > 0

    async def hand_back(self, job_id: str, worker: str) -> bool:
        # Not a death: the attempt the claim counted is given back too.
        result = await self.conn.execute(
            jobs.update()
            .where(
                jobs.c.id == job_id,
                jobs.c.lease_owner == worker,
                jobs.c.status == JobStatus.IN_PROGRESS.value,
            )
            .values(
                status=JobStatus.QUEUED.value,
                lease_owner=None,
                lease_expires_at=None,
                attempts=jobs.c.attempts - 1,
            )
        )
        if result.rowcount:
            await self._notify(Channel.JOB, job_id)
            await self._notify(Channel.JOBS, "*")
        return bool(result.rowcount)

    async def requeue_orphaned(
        self, node: str | None, expired_before: datetime | None
    ) -> list[str]:
        condition = jobs.c.status == JobStatus.IN_PROGRESS.value
        if node is not None:
            condition = sa.and_(condition, jobs.c.node == node)
        if expired_before is not None:
            condition = sa.and_(condition, jobs.c.lease_expires_at < expired_before)
        ids = [r["id"] for r in await self._all(sa.select(jobs.c.id).where(condition))]
        if ids:
            await self.conn.execute(
                jobs.update()
                .where(jobs.c.id.in_(ids), jobs.c.status == JobStatus.IN_PROGRESS.value)
                .values(status=JobStatus.QUEUED.value, lease_owner=None, lease_expires_at=None)
            )
            for job_id in ids:
                await self._notify(Channel.JOB, job_id)
            await self._notify(Channel.JOBS, node or "*")
        return ids

    async def count_jobs(self, status: JobStatus) -> int:
        query = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == status.value)
        return int((await self.conn.execute(query)).scalar_one())

    async def count_snapshots(self, status: SnapshotStatus) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(snapshots)
            .where(snapshots.c.status == status.value)
        )
        return int((await self.conn.execute(query)).scalar_one())

    # capacity ---------------------------------------------------------------------------------

    async def set_snapshot_slots(self, vps_id: str, slots: int) -> None:
        await self.conn.execute(vps.update().where(vps.c.id == vps_id).values(snapshot_slots=slots))

    # retention --------------------------------------------------------------------------------

    async def expired_snapshots(self, now: datetime, limit: int) -> list[Snapshot]:
        query = (
            sa.select(snapshots)
            .where(
                snapshots.c.status == SnapshotStatus.AVAILABLE.value,
                snapshots.c.expires_at <= now,
            )
            .order_by(snapshots.c.expires_at)
            .limit(limit)
        )
        return [_snapshot(r) for r in await self.conn.execute(query)]

    async def expired_snapshot_keys(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        query = (
            sa.select(snapshots.c.vps_id, snapshots.c.name)
            .where(
                snapshots.c.status == SnapshotStatus.AVAILABLE.value,
                snapshots.c.expires_at <= now,
            )
            .order_by(snapshots.c.expires_at)
            .limit(limit)
        )
        return [(row[0], row[1]) for row in await self.conn.execute(query)]

    async def lock_vps_rows(self, vps_ids: Sequence[str]) -> list[VpsRef]:
        if not vps_ids:
            return []
        query = (
            sa.select(vps.c.id, vps.c.account_id, vps.c.node)
            .where(vps.c.id.in_(vps_ids))
            .order_by(vps.c.id)
            .with_for_update()
        )
        return [VpsRef(row[0], row[1], row[2]) for row in await self.conn.execute(query)]

    async def mark_expired_deleting(
        self, vps_ids: Sequence[str], now: datetime
    ) -> list[tuple[str, str]]:
        if not vps_ids:
            return []
        statement = _mark_expired(vps_ids, now)
        moved = sorted(
            (row[2], row[0], name_key(row[1]), row[1]) for row in await self.conn.execute(statement)
        )
        return [(vps_id, name) for _, vps_id, _, name in moved]

    async def purge_finished_jobs(self, before: datetime) -> int:
        result = await self.conn.execute(
            jobs.delete().where(
                jobs.c.status.in_([JobStatus.COMPLETED.value, JobStatus.FAILED.value]),
                jobs.c.finished_at < before,
            )
        )
        return int(result.rowcount)

    # schedules --------------------------------------------------------------------------------

    async def get_schedule(self, vps_id: str) -> Schedule | None:
        row = await self._one(
            sa.select(snapshot_schedules).where(snapshot_schedules.c.vps_id == vps_id)
        )
        return _schedule(row) if row else None

    async def save_schedule(self, schedule: Schedule) -> None:
        values = dataclasses.asdict(schedule)
        updated = await self.conn.execute(
            snapshot_schedules.update()
            .where(snapshot_schedules.c.vps_id == schedule.vps_id)
            .values(**values)
        )
        if not updated.rowcount:
            await self.conn.execute(snapshot_schedules.insert(), values)

    async def delete_schedule(self, vps_id: str) -> bool:
        result = await self.conn.execute(
            snapshot_schedules.delete().where(snapshot_schedules.c.vps_id == vps_id)
        )
        return bool(result.rowcount)

    async def due_schedules(self, now: datetime, limit: int) -> list[Schedule]:
        query = (
            sa.select(snapshot_schedules)
            .where(
                snapshot_schedules.c.enabled.is_(True),
                snapshot_schedules.c.next_run_at <= now,
            )
            .order_by(snapshot_schedules.c.next_run_at)
            .limit(limit)
        )
        return [_schedule(r) for r in await self._all(query)]

    # idempotency ------------------------------------------------------------------------------

    async def get_idempotency(self, owner: str, key: str) -> IdempotencyRecord | None:
        row = await self._one(
            sa.select(idempotency_records).where(
                idempotency_records.c.owner == owner, idempotency_records.c.key == key
            )
        )
        return _idempotency(row) if row else None

    async def add_idempotency(self, record: IdempotencyRecord) -> None:
        """Raises ``IdempotencyKeyInUse`` when a record for (owner, key) exists already."""
        values = dataclasses.asdict(record)
        values["state"] = record.state.value
        try:
            async with self.conn.begin_nested():
                await self.conn.execute(idempotency_records.insert(), values)
        except IntegrityError as exc:
            raise IdempotencyKeyInUse(
                "A request with this Idempotency-Key is already being handled."
            ) from exc

    async def complete_idempotency(
        self, owner: str, key: str, status: int, headers: dict[str, str], body: str
    ) -> None:
        await self.conn.execute(
            idempotency_records.update()
            .where(idempotency_records.c.owner == owner, idempotency_records.c.key == key)
            .values(
                state=IdempotencyState.DONE.value,
                response_status=status,
                response_headers=headers,
                response_body=body,
            )
        )

    async def remove_idempotency(self, owner: str, key: str) -> None:
        await self.conn.execute(
            idempotency_records.delete().where(
                idempotency_records.c.owner == owner, idempotency_records.c.key == key
            )
        )

    async def purge_idempotency(self, now: datetime) -> int:
        result = await self.conn.execute(
            idempotency_records.delete().where(idempotency_records.c.expires_at <= now)
        )
        return int(result.rowcount)


def _schedule(row: Row) -> Schedule:
    return Schedule(
        vps_id=row["vps_id"],
        enabled=row["enabled"],
        interval_hours=row["interval_hours"],
        next_run_at=row["next_run_at"],
        last_run_at=row["last_run_at"],
        last_run_status=row["last_run_status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _idempotency(row: Row) -> IdempotencyRecord:
    return IdempotencyRecord(
        owner=row["owner"],
        key=row["key"],
        method=row["method"],
        path=row["path"],
        fingerprint=row["fingerprint"],
        state=IdempotencyState(row["state"]),
        response_status=row["response_status"],
        response_headers=row["response_headers"],
        response_body=row["response_body"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


class _SmallStatement:
    """A prebuilt ``SELECT`` compiled for one dialect, run on a small-read connection
    (``store.small_reads``) with SQLAlchemy's own bind and result processors of its columns,
    so its rows are what ``conn.execute(query).mappings()`` gives (tests/store/test_small_reads.py
    compares the two for every statement in ``_SMALL_READ_QUERIES``)."""

    def __init__(self, query: sa.Select[Any], dialect: sa.Dialect) -> None:
        compiled = query.compile(dialect=dialect)
        if not compiled.positional or compiled.positiontup is None:
            raise TypeError(f"{dialect.name}: a positional paramstyle is expected")
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup)
        binds = compiled.binds
        self._defaults = {name: binds[name].effective_value for name in self.names}
        self._bind = [
            binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self.names
        ]
        columns = query.selected_columns
        self.keys = tuple(columns.keys())
        self._result = [
            (i, processor)
            for i, column in enumerate(columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None))
            is not None
        ]

    def args(self, params: Mapping[str, Any] | None) -> tuple[Any, ...]:
        """The positional arguments for ``params`` (names as bound; literals as compiled)."""
        given = params or {}
        values = []
        for name, process in zip(self.names, self._bind, strict=True):
            value = given[name] if name in given else self._defaults[name]
            values.append(value if process is None else process(value))
        return tuple(values)

    def mapping(self, raw: Sequence[Any]) -> dict[str, Any]:
        """A driver row as SQLAlchemy's row mapping would give it."""
        row = list(raw)
        for i, process in self._result:
            row[i] = process(row[i])
        return dict(zip(self.keys, row, strict=True))


# The statements small reads run below SQLAlchemy (by identity; compiled per dialect on first
# use). Every other statement of a small transaction goes through SQLAlchemy's connection.
_SMALL_READ_QUERIES: tuple[sa.Select[Any], ...] = (
    _FIND_KEY,
    _GET_JOB,
    _GET_NODE,
    _ANY_QUEUED,
    GET_VPS_STORAGE,
    LIST_DATA_STORES_OF_NODE,
)
_SMALL_STATEMENTS: dict[tuple[int, str], _SmallStatement] = {}


def _small_statement(query: sa.Select[Any], dialect: sa.Dialect) -> _SmallStatement | None:
    """``query`` compiled for small reads on ``dialect``, or None if it is not one of them."""
    key = (id(query), dialect.name)
    found = _SMALL_STATEMENTS.get(key)
    if found is None:
        if not any(query is known for known in _SMALL_READ_QUERIES):
            return None
        found = _SMALL_STATEMENTS[key] = _SmallStatement(query, dialect)
    return found


RunStatement = Callable[[str, tuple[Any, ...]], Awaitable[Sequence[Sequence[Any]]]]
"""Runs one statement with positional arguments on a small-read connection: its rows."""


class _FallbackConnection:
    """What a small transaction's methods that are not run below SQLAlchemy use as ``conn``:
    a connection of SQLAlchemy's read engine, begun on first use and ended with the
    transaction (``stack``). Its statements see their own snapshot, not the small-read
    connection's (on PostgreSQL every statement does anyway)."""

    def __init__(self, engine: AsyncEngine, stack: AsyncExitStack) -> None:
        self.dialect = engine.dialect
        self._engine = engine
        self._stack = stack
        self._conn: AsyncConnection | None = None

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            self._conn = await self._stack.enter_async_context(self._engine.begin())
        return self._conn

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await (await self._connection()).execute(*args, **kwargs)

    async def exec_driver_sql(self, *args: Any, **kwargs: Any) -> Any:
        return await (await self._connection()).exec_driver_sql(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"a small read-only transaction has no {name!r}")


class SmallReadTransaction(SqlTransaction):
    """A small read-only transaction on a connection of vpsnap's own (``store.small_reads``):
    the list reads (``RawSelect``) and ``_SMALL_READ_QUERIES`` run there through ``run``;
    anything else through ``fallback`` (SQLAlchemy's read engine)."""

    def __init__(self, run: RunStatement, dialect: sa.Dialect, fallback: _FallbackConnection):
        super().__init__(cast("AsyncConnection", fallback), None)
        self._run = run
        self._dialect = dialect
        # Storage rows read along with a VPS's snapshots, by VPS id, until asked for.
        self._storage_read: dict[str, VpsStorage | None] = {}

    async def get_vps_with_snapshots(self, vps_id: str) -> tuple[Vps, list[Snapshot]] | None:
        """As ``SqlTransaction``'s, and the VPS's storage row in the same statement: the
        ``get_vps_storage`` a snapshot listing asks next is answered from it (one round trip
        fewer on PostgreSQL)."""
        query = _GET_VPS_WITH_SNAPSHOTS_AND_STORAGE_RAW
        rows = await self._raw_rows(query, {"b_id": vps_id})
        if not rows:
            return None
        dialect = self._dialect
        item = _vps(query.decode(dialect, rows[:1])[0])
        snapshot_key, storage_key = len(vps.c), len(vps.c) + len(snapshots.c)
        found = [row for row in rows if row[snapshot_key] is not None]
        storage = None
        if rows[0][storage_key] is not None:
            values = query.decode(dialect, rows[:1], part=2)[0]
            storage = vps_storage_from_row(dict(zip(vps_storage.c.keys(), values, strict=True)))
        self._storage_read[vps_id] = storage
        return item, [_snapshot(row) for row in query.decode(dialect, found, part=1)]

    async def get_vps_storage(self, vps_id: str) -> VpsStorage | None:
        if vps_id in self._storage_read:
            return self._storage_read.pop(vps_id)
        return await super().get_vps_storage(vps_id)

    async def _raw_rows(
        self, query: RawSelect, params: Mapping[str, Any], limit: int | None = None
    ) -> Sequence[Sequence[Any]]:
        sql, names, fixed = query.sql(self._dialect)
        if limit is not None:
            sql = f"{sql} LIMIT {int(limit)}"
        return await self._run(
            sql, tuple(params[name] if name in params else fixed[name] for name in names)
        )

    async def _one(self, query: sa.Select[Any], params: dict[str, Any] | None = None) -> Row | None:
        statement = _small_statement(query, self._dialect)
        if statement is None:
            return await super()._one(query, params)
        rows = await self._run(statement.sql, statement.args(params))
        return statement.mapping(rows[0]) if rows else None

    async def _all(self, query: sa.Select[Any], params: dict[str, Any] | None = None) -> list[Row]:
        statement = _small_statement(query, self._dialect)
        if statement is None:
            return await super()._all(query, params)
        return [
            statement.mapping(row) for row in await self._run(statement.sql, statement.args(params))
        ]

    async def _fetch_one(
        self, query: sa.Select[Any], params: dict[str, Any] | None = None
    ) -> Row | None:
        return await self._one(query, params)

    async def _fetch_all(
        self, query: sa.Select[Any], params: dict[str, Any] | None = None
    ) -> list[Row]:
        return await self._all(query, params)


def _pg_lost() -> tuple[type[BaseException], ...]:
    """Errors after which an asyncpg connection is gone (or its state unknown): the read is
    "database unavailable", as SQLAlchemy's disconnect detection makes it on the engine's
    path."""
    import asyncpg  # noqa: PLC0415 - PostgreSQL only

    return (
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        OSError,
        TimeoutError,
    )


@asynccontextmanager
async def _sqlite_small_read(
    pool: SqliteReadPool, dialect: sa.Dialect, fallback: AsyncEngine
) -> AsyncIterator[SmallReadTransaction]:
    """A small read transaction on one of ``pool``'s connections: deferred ``BEGIN`` at the
    first statement, ``COMMIT`` at the end, all on the calling thread (``store.small_reads``).
    ``sqlite3`` errors are raised as SQLAlchemy's (``DBAPIError.instance``), as the engine's
    path raises them."""
    try:
        conn = await pool.acquire()
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(None, None, exc, sqlite3.Error) from exc

    async def run(sql: str, args: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN")
            rows: list[tuple[Any, ...]] = conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, args, exc, sqlite3.Error) from exc
        return rows

    reuse = True
    try:
        async with AsyncExitStack() as stack:
            yield SmallReadTransaction(run, dialect, _FallbackConnection(fallback, stack))
    except BaseException as exc:
        # A database error may leave the connection in a state not worth keeping; the
        # service's own errors (a VPS not found) do not.
        reuse = not isinstance(exc, sa.exc.DBAPIError | sqlite3.Error)
        raise
    finally:
        try:
            if conn.in_transaction:
                conn.execute("COMMIT")  # a read transaction: releases the read mark only
        except sqlite3.Error:
            reuse = False
        await pool.release(conn, reuse=reuse)


@asynccontextmanager
async def _pg_small_read(
    pool: PgReadPool, dialect: sa.Dialect, fallback: AsyncEngine
) -> AsyncIterator[SmallReadTransaction]:
    """A small read on one of ``pool``'s asyncpg connections, in autocommit: one round trip
    per (prepared) statement. A lost connection raises SQLAlchemy's ``InterfaceError`` (the
    caller makes it ``DatabaseUnavailable``), other server errors a ``DBAPIError``."""
    import asyncpg  # noqa: PLC0415 - PostgreSQL only

    lost = _pg_lost()
    try:
        conn = await pool.acquire()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise sa.exc.DBAPIError(None, None, exc) from exc

    in_flight = False

    async def run(sql: str, args: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        nonlocal in_flight
        in_flight = True
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            in_flight = False
        except lost as exc:
            raise sa.exc.InterfaceError(sql, args, exc) from exc
        except asyncpg.PostgresError as exc:
            if conn.is_closed():
                raise sa.exc.InterfaceError(sql, args, exc) from exc
            raise sa.exc.DBAPIError(sql, args, exc) from exc
        return rows

    try:
        async with AsyncExitStack() as stack:
            yield SmallReadTransaction(run, dialect, _FallbackConnection(fallback, stack))
    finally:
        if in_flight or conn.is_in_transaction():
            # A statement cancelled or failed midway (or a transaction someone opened): the
            # connection's state is unknown, so it is dropped at once, not reused.
            conn.terminate()
        await pool.release(conn, reuse=not conn.is_closed())
