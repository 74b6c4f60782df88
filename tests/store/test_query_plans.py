"""The indexes of migration 0014 (issue 15) are the ones the planners pick: the checks behind
every enqueue, sweep and list would otherwise scan whole tables as the fleet grows. On
PostgreSQL sequential scans are switched off for the plan, so a plan that still scans proves
that no index can serve the query (a tiny table would make a scan the honest choice)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from vpsnap.domain.model import SnapshotStatus
from vpsnap.store import sql
from vpsnap.store.sql import SqlStore
from vpsnap.store.tables import jobs, snapshots, vps


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


async def test_the_set_based_active_check_reads_an_index(store: SqlStore) -> None:
    query = (
        sa.select(jobs.c.vps_id)
        .distinct()
        .where(jobs.c.vps_id.in_(["vps_a", "vps_b"]), sql._IS_UNFINISHED)
    )

    _assert_job_index(await _plan(store, query))


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
