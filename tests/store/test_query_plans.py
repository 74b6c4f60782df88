"""The indexes of migration 0014 (issue 15) are the ones the planners pick: the checks behind
every enqueue, sweep and list would otherwise scan whole tables as the fleet grows. On
PostgreSQL sequential scans are switched off for the plan, so a plan that still scans proves
that no index can serve the query (a tiny table would make a scan the honest choice)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from vpsnap.domain.model import SnapshotStatus
from vpsnap.store import sql
from vpsnap.store.sql import SqlStore
from vpsnap.store.tables import accounts, jobs, snapshots, vps


async def _plan(store: SqlStore, statement: sa.Executable) -> str:
    async with store.engine.connect() as conn:
        compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        if store.is_postgres:
            await conn.execute(sa.text("SET enable_seqscan = off"))
            rows = await conn.execute(sa.text(f"EXPLAIN {compiled}"))
        else:
            rows = await conn.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))
        plan = "\n".join(" ".join(str(c) for c in row) for row in rows)
        await conn.rollback()
    return plan


def _assert_job_index(plan: str) -> None:
    # PostgreSQL picks the partial index of unfinished jobs; SQLite the (vps_id, status) one,
    # which serves the same lookup. Either way: no scan of the job history.
    assert "ix_jobs_unfinished_vps" in plan or "ix_jobs_vps_status" in plan, plan
    assert "Seq Scan on jobs" not in plan
    assert "SCAN jobs" not in plan


async def test_the_active_job_check_reads_an_index(store: SqlStore) -> None:
    plan = await _plan(store, sql._ACTIVE_JOB.params(b_vps="vps_x"))

    _assert_job_index(plan)


# A batch of the sweep or of reconciliation: 200 VPSes.
_BATCH = [f"vps_{i:03d}" for i in range(200)]


async def test_the_set_based_active_check_probes_each_vps_in_the_index(store: SqlStore) -> None:
    plan = await _plan(store, sql._busy_vps(_BATCH))

    _assert_job_index(plan)
    # One lookup by VPS id, never a read of every unfinished job: PostgreSQL's plan of
    # `jobs.vps_id IN (200 ids)` read them all through ix_jobs_status_node, for every batch.
    assert "ix_jobs_status_node" not in plan, plan
    if store.is_postgres:
        assert "Index Cond: ((vps_id)::text = (vps.id)::text)" in plan, plan
    else:
        assert "(vps_id=?" in plan, plan


async def test_the_sweep_moves_snapshots_found_by_primary_key(store: SqlStore) -> None:
    statement = sql._mark_expired(_BATCH, datetime(2030, 1, 1, tzinfo=UTC))

    plan = await _plan(store, statement)

    # Not through the (status, expires_at) index: that would read every expired snapshot still
    # available (most of them, in a sweep after downtime) for each batch.
    assert "ix_snapshots_status_expires_at" not in plan, plan
    assert "ix_snapshots_expires_at" not in plan, plan
    assert "pk_snapshots" in plan or "sqlite_autoindex_snapshots_1 (vps_id=?)" in plan, plan


async def test_an_account_page_of_vps_is_read_in_id_order_from_an_index(store: SqlStore) -> None:
    query = (
        sa.select(vps)
        .where(vps.c.account_id == "acct_x", vps.c.id > "vps_a")
        .order_by(vps.c.id)
        .limit(21)
    )

    plan = await _plan(store, query)

    assert "ix_vps_account_id" in plan, plan
    assert "TEMP B-TREE" not in plan  # SQLite's sort of the whole account


async def test_the_sweep_reads_available_snapshots_by_expiry_from_an_index(
    store: SqlStore,
) -> None:
    query = (
        sa.select(snapshots.c.vps_id, snapshots.c.name)
        .where(
            snapshots.c.status == SnapshotStatus.AVAILABLE.value,
            snapshots.c.expires_at <= datetime(2030, 1, 1, tzinfo=UTC),
        )
        .order_by(snapshots.c.expires_at)
        .limit(500)
    )

    plan = await _plan(store, query)

    assert "ix_snapshots_status_expires_at" in plan, plan
    assert "TEMP B-TREE" not in plan


async def test_the_worker_looks_at_the_queue_through_the_status_and_node_index(
    store: SqlStore,
) -> None:
    """The read before a claim (jobs.worker, ``_anything_queued``) runs inline on the event
    loop on SQLite: it must stay one index probe however long the job history grows."""
    plan = await _plan(store, sql._ANY_QUEUED.params(b_node="local"))

    assert "ix_jobs_status_node" in plan, plan
    assert "Seq Scan on jobs" not in plan
    assert "SCAN jobs" not in plan


async def test_jobs_since_the_last_reconcile_pass_are_found_by_vps_and_time(
    store: SqlStore,
) -> None:
    # Two indexes start with vps_id; which one the planner takes depends on the statistics, so
    # the table holds what it holds in use: a week of finished jobs per VPS, analyzed.
    await _keep_job_history(store, per_vps=50)
    since = datetime(2030, 1, 1, tzinfo=UTC)
    statement = sql._jobs_since(_BATCH, since)

    plan = await _plan(store, statement)

    # Not every kept job of the page's VPSes (7 days of history) filtered by time: the index
    # has the time too, so only jobs since the pass are read.
    assert "ix_jobs_vps_created_at" in plan, plan
    assert "Seq Scan on jobs" not in plan
    assert "SCAN jobs" not in plan
    if store.is_postgres:
        assert "created_at >=" in plan.split("Index Cond:", 1)[-1], plan
    else:
        assert "(vps_id=? AND created_at>?)" in plan, plan


async def _keep_job_history(store: SqlStore, *, per_vps: int) -> None:
    """The VPSes of ``_BATCH`` with ``per_vps`` finished jobs each, created up to a week before
    2030-01-01, and fresh planner statistics."""
    created = datetime(2030, 1, 1, tzinfo=UTC)
    async with store.engine.begin() as conn:
        await conn.execute(
            accounts.insert().values(id="acct_plan", name="plan", created_at=created)
        )
        await conn.execute(
            vps.insert(),
            [
                {
                    "id": vps_id,
                    "account_id": "acct_plan",
                    "name": vps_id,
                    "name_key": vps_id,
                    "node": "local",
                    "disks": [],
                    "snapshot_slots": 3,
                    "service_status": "active",
                    "primary_ip": "10.0.0.1",
                    "resources": {},
                    "created_at": created,
                    "power_state": "stopped",
                }
                for vps_id in _BATCH
            ],
        )
        await conn.execute(
            jobs.insert(),
            [
                {
                    "id": f"job_{vps_id}_{k:03d}",
                    "account_id": "acct_plan",
                    "vps_id": vps_id,
                    "node": "local",
                    "type": "snapshot_create",
                    "status": "completed",
                    "payload": {},
                    "progress": 100,
                    "attempts": 1,
                    "created_at": created - timedelta(hours=3 * k + 1),
                    "lane": "quick",
                }
                for vps_id in _BATCH
                for k in range(per_vps)
            ],
        )
    async with store.engine.connect() as conn:
        await conn.execute(sa.text("ANALYZE"))
        await conn.commit()
