"""The bulk path of jobs and audit events (``store.bulk.insert_rows``: unnest on PostgreSQL, a
plain executemany on SQLite) stores exactly what the one-row path (``table.insert()``) stores:
same text in every column, JSON ``null`` for a Python None, UTC timestamps, whatever the
values hold."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from vpsnap.domain.audit import SCHEDULER, Actor, AuditEvent, AuditOutcome, Target
from vpsnap.domain.model import Account, Job, JobLane, JobStatus, JobType, ServiceStatus, Vps
from vpsnap.store import bulk
from vpsnap.store.sql import SqlStore
from vpsnap.store.sqlite_connection import InlineWriteConnection
from vpsnap.store.tables import UtcDateTime, audit_events, jobs

NOW = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
STORED_NOW = "2030-01-02 03:04:05.678901"  # naive UTC, as text on both databases


async def _vps(store: SqlStore) -> Vps:
    vps = Vps("vps_1", "acct_1", "web", "node-a", ("/d/web.qcow2",), 3, ServiceStatus.ACTIVE, NOW)
    async with store.transaction() as tx:
        await tx.add_account(Account("acct_1", "acme", NOW))
        await tx.add_vps(vps)
    return vps


def _jobs(vps: Vps) -> list[Job]:
    plain = Job(
        id="job_a",
        account_id=vps.account_id,
        vps_id=vps.id,
        type=JobType.SNAPSHOT_EXPIRE,
        status=JobStatus.QUEUED,
        snapshot_name="nightly",
        payload={},
        progress=0,
        result=None,
        error=None,
        attempts=0,
        created_at=NOW,
        lane=JobLane.QUICK,
        node=vps.node,
        created_by=SCHEDULER,
    )
    # Every optional column set, awkward text, a timestamp in another zone.
    full = dataclasses.replace(
        plain,
        id="job_b",
        status=JobStatus.FAILED,
        snapshot_name='it\'s "é" ,{}',
        payload={"nested": {"list": [1, 2.5, None, "x"]}, "quote": "'\"\\"},
        progress=42,
        result={"ok": True},
        error={"code": "boom", "detail": "naïve ☃"},
        attempts=3,
        created_at=NOW.astimezone(timezone(timedelta(hours=-5))),
        started_at=NOW + timedelta(seconds=1),
        finished_at=NOW + timedelta(seconds=2),
        lease_owner="worker-1",
        lease_expires_at=NOW + timedelta(minutes=5),
        lane=JobLane.SLOW,
        journal={"step": "deleted"},
        request_id="req_1",
        created_by=Actor.admin("root"),
    )
    return [plain, full]


def _events(vps: Vps) -> list[AuditEvent]:
    plain = AuditEvent(
        id="aud_a",
        occurred_at=NOW,
        account_id=vps.account_id,
        actor=SCHEDULER,
        action="snapshot.expire",
        outcome=AuditOutcome.SUCCEEDED,
        target=Target("snapshot", "nightly"),
        vps_id=vps.id,
        request_id=None,
        client_ip=None,
        problem_code=None,
        details={"jobId": "job_a"},
    )
    bare = dataclasses.replace(
        plain, id="aud_b", account_id=None, target=None, vps_id=None, details={}
    )
    odd = dataclasses.replace(
        plain,
        id="aud_c",
        outcome=AuditOutcome.FAILED,
        request_id="req_'1'",
        client_ip="::1",
        problem_code="snapshot-busy",
        details={"why": 'naïve "quoted" ☃'},
    )
    return [plain, bare, odd]


async def _stored(store: SqlStore, table: sa.Table, prefix: str) -> dict[str, tuple[object, ...]]:
    """Every column but the id as the database's own text (JSON null vs SQL NULL shows)."""
    columns = [sa.cast(c, sa.Text) for c in table.c if c.name != "id"]
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(table.c.id, *columns).where(table.c.id.like(f"{prefix}%"))
        )
        return {row[0].removeprefix(prefix): tuple(row[1:]) for row in rows}


def _renamed(item: Job, prefix: str) -> Job:
    return dataclasses.replace(item, id=prefix + item.id)


async def test_jobs_inserted_in_bulk_are_stored_as_one_by_one(store: SqlStore) -> None:
    vps = await _vps(store)
    items = _jobs(vps)

    async with store.transaction() as tx:
        for item in items:
            await tx.add_job(_renamed(item, "one_"), vps.node)
        await tx.add_jobs([_renamed(item, "bulk_") for item in items])

    one_by_one = await _stored(store, jobs, "one_")
    assert await _stored(store, jobs, "bulk_") == one_by_one
    assert len(one_by_one) == 2
    async with store.transaction(read_only=True) as tx:
        for item in items:
            stored = await tx.get_job("bulk_" + item.id)
            assert stored == _renamed(item, "bulk_")


async def test_audit_events_inserted_in_bulk_are_stored_as_one_by_one(store: SqlStore) -> None:
    vps = await _vps(store)
    events = _events(vps)

    async with store.transaction() as tx:
        for event in events:
            await tx.add_audit_event(dataclasses.replace(event, id="one_" + event.id))
        await tx.add_audit_events([dataclasses.replace(e, id="bulk_" + e.id) for e in events])

    one_by_one = await _stored(store, audit_events, "one_")
    assert await _stored(store, audit_events, "bulk_") == one_by_one
    assert len(one_by_one) == 3


async def test_a_bulk_insert_with_a_taken_key_writes_nothing(store: SqlStore) -> None:
    vps = await _vps(store)
    plain, full = _jobs(vps)
    async with store.transaction() as tx:
        await tx.add_jobs([plain])

    with pytest.raises(IntegrityError):
        async with store.transaction() as tx:
            await tx.add_jobs([dataclasses.replace(full, id="job_c"), full, plain])

    async with store.transaction(read_only=True) as tx:
        assert await tx.get_job("job_c") is None
        assert await tx.get_job(full.id) is None


async def test_many_rows_go_in_one_statement(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    vps = await _vps(store)
    [plain, _] = _jobs(vps)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    # Statements SQLite runs inline (store.driver_sql) pass no SQLAlchemy event: seen here.
    inline = InlineWriteConnection.execute_inline

    def count_inline(self: InlineWriteConnection, sql: str, *args: Any, **kwargs: Any) -> Any:
        done = inline(self, sql, *args, **kwargs)
        if done is not None:
            statements.append(sql)
        return done

    monkeypatch.setattr(InlineWriteConnection, "execute_inline", count_inline)
    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with store.transaction() as tx:
            await tx.add_jobs([dataclasses.replace(plain, id=f"job_{i:05d}") for i in range(3000)])
    finally:
        sa.event.remove(store.engine.sync_engine, "before_cursor_execute", count)

    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1, inserts
    if store.is_postgres:
        assert "unnest" in inserts[0]
    async with store.transaction(read_only=True) as tx:
        assert await tx.count_jobs(JobStatus.QUEUED) == 3000


_probe = sa.Table(
    "bulk_probe",
    sa.MetaData(),
    sa.Column("label", sa.String(20), nullable=True),
    sa.Column("number", sa.Integer(), nullable=True),
    sa.Column("doc", sa.JSON(), nullable=True),
    sa.Column("at", UtcDateTime(), nullable=True),
)


async def test_values_equal_in_python_but_stored_differently_stay_apart(store: SqlStore) -> None:
    # Columns the same in every row go as one value; 1, 1.0 and True are equal in Python but
    # not in JSON, a time in two zones is one instant.
    rows = [
        {"label": "a", "number": 7, "doc": {"x": 1}, "at": NOW},
        {
            "label": "a",
            "number": 7,
            "doc": {"x": True},
            "at": NOW.astimezone(timezone(timedelta(hours=2))),
        },
        {"label": "a", "number": 7, "doc": {"x": 1.0}, "at": NOW},
        {"label": "a", "number": 7, "doc": {"x": 1}, "at": NOW},
    ]
    stored = await _probe_rows(store, rows)

    assert stored == sorted(
        [
            ("a", "7", '{"x": 1}', STORED_NOW),
            ("a", "7", '{"x": true}', STORED_NOW),
            ("a", "7", '{"x": 1.0}', STORED_NOW),
            ("a", "7", '{"x": 1}', STORED_NOW),
        ]
    )


async def test_identical_rows_are_all_inserted(store: SqlStore) -> None:
    row = {"label": "same", "number": None, "doc": {"k": [1]}, "at": None}

    assert (
        await _probe_rows(store, [row, row, dict(row)]) == [("same", None, '{"k": [1]}', None)] * 3
    )
    assert await _probe_rows(store, [row]) == [("same", None, '{"k": [1]}', None)]


async def _probe_rows(store: SqlStore, rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
    async with store.engine.begin() as conn:
        await conn.run_sync(lambda c: _probe.drop(c, checkfirst=True))
        await conn.run_sync(_probe.create)
        await bulk.insert_rows(conn, _probe, rows)
        result = await conn.execute(sa.select(*(sa.cast(c, sa.Text) for c in _probe.c)))
        stored = sorted(tuple(row) for row in result)
        await conn.run_sync(_probe.drop)
    return stored
