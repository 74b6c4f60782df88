"""The job path's thinner statements (docs/performance.md, "The job path, fourth round"): the
claim's one-statement candidates and narrow update, the finish's narrow update, PostgreSQL's
NOTIFY in their RETURNING, and the inserts through store.bulk. Both databases."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from vpsnap.domain import queue
from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.model import JobLane, JobStatus
from vpsnap.domain.ports import ClaimRequest
from vpsnap.services.snapshots import CreateSnapshot
from vpsnap.store import sql
from vpsnap.store.tables import jobs

from .conftest import LEASE_SECONDS, World


class RolledBack(Exception):
    """Raised in a transaction to roll it back."""


async def _row(world: World, job_id: str) -> dict[str, Any]:
    async with world.store.engine.connect() as conn:
        row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).mappings().one()
    return dict(row)


def _request(world: World, worker: str, slots: int) -> ClaimRequest:
    now = world.clock.now()
    return ClaimRequest(
        node="local",
        worker=worker,
        now=now,
        lease_until=now + timedelta(seconds=LEASE_SECONDS),
        free={JobLane.QUICK: slots, JobLane.SLOW: slots},
    )


async def test_concurrent_claims_take_every_job_exactly_once(world: World) -> None:
    snapshots = world.runtime.services.snapshots
    queued = []
    for i in range(12):
        vps = await world.add_vps(f"web-{i}")
        queued.append((await snapshots.create(world.principal, vps.id, CreateSnapshot("s"))).id)

    async def claim(worker: str) -> list[str]:
        async with world.store.transaction() as tx:
            return [job.id for job in await tx.claim_jobs(_request(world, worker, 2))]

    workers = [f"worker-{i}" for i in range(8)]
    taken = await asyncio.gather(*(claim(worker) for worker in workers))
    claimed = [job_id for batch in taken for job_id in batch]
    assert claimed and len(claimed) == len(set(claimed))  # never twice
    # Every job went to the worker that says it took it, its attempt counted once.
    for worker, batch in zip(workers, taken, strict=True):
        for job_id in batch:
            row = await _row(world, job_id)
            assert (row["status"], row["lease_owner"], row["attempts"]) == (
                "in_progress",
                worker,
                1,
            )
    # Whatever was left (PostgreSQL's SKIP LOCKED may leave some to the next claim) is still
    # queued, untouched, and a later claim takes exactly that.
    left = set(queued) - set(claimed)
    for job_id in left:
        assert (await _row(world, job_id))["status"] == "queued"
    async with world.store.transaction() as tx:
        late = await tx.claim_jobs(_request(world, "late", len(queued)))
    assert {job.id for job in late} == left


async def test_the_claim_takes_the_oldest_first_and_changes_only_the_lease(world: World) -> None:
    vps_a = await world.add_vps("a")
    vps_b = await world.add_vps("b")
    snapshots = world.runtime.services.snapshots
    first = await snapshots.create(world.principal, vps_a.id, CreateSnapshot("one"))
    world.clock.advance(seconds=1)
    second = await snapshots.create(world.principal, vps_b.id, CreateSnapshot("two"))
    before = await _row(world, first.id)

    async with world.store.transaction() as tx:
        taken = await tx.claim_jobs(_request(world, "w", 1))
    assert [job.id for job in taken] == [first.id]  # FIFO by creation
    after = await _row(world, first.id)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {"status", "attempts", "started_at", "lease_owner", "lease_expires_at"}
    assert after["attempts"] == 1 and after["lease_owner"] == "w"
    # The job object the worker gets is the stored row.
    assert taken[0] == await world.job(first.id)
    assert (await _row(world, second.id))["status"] == "queued"


async def test_an_account_at_its_share_is_passed_over(world: World) -> None:
    other = await world.runtime.services.accounts.create_account("bob")
    bob = Principal(other.id, frozenset({Scope.WRITE_ALL}))
    snapshots = world.runtime.services.snapshots
    mine = [await world.add_vps(f"mine-{i}") for i in range(2)]
    theirs = await world.add_vps("theirs", account_name="bob")
    running = await snapshots.create(world.principal, mine[0].id, CreateSnapshot("a"))
    assert [j.id for j in await world.claim("w1")] == [running.id]
    world.clock.advance(seconds=1)
    waiting = await snapshots.create(world.principal, mine[1].id, CreateSnapshot("b"))
    world.clock.advance(seconds=1)
    bobs = await snapshots.create(bob, theirs.id, CreateSnapshot("c"))

    request = _request(world, "w2", 3)
    request = ClaimRequest(
        node=request.node,
        worker=request.worker,
        now=request.now,
        lease_until=request.lease_until,
        free=request.free,
        account_share={JobLane.QUICK: 1, JobLane.SLOW: 1},
    )
    async with world.store.transaction() as tx:
        taken = await tx.claim_jobs(request)
    # Alice already runs one job on the node (her share): only Bob's is taken.
    assert [job.id for job in taken] == [bobs.id]
    assert (await _row(world, waiting.id))["status"] == "queued"


async def test_finish_writes_the_end_only_for_the_lease_holder(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("s")
    )
    [claimed] = await world.claim("w1")
    before = await _row(world, job.id)
    now = world.clock.now()
    with pytest.raises(queue.LeaseLost):
        async with world.store.transaction() as tx:
            await queue.finish(tx, claimed, "someone-else", now, result={"name": "s"})
    assert await _row(world, job.id) == before

    async with world.store.transaction() as tx:
        ended, promoted = await queue.finish(tx, claimed, "w1", now, result={"name": "s"})
    assert promoted is None
    after = await _row(world, job.id)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {
        "status",
        "progress",
        "result",
        "finished_at",
        "lease_owner",
        "lease_expires_at",
    }
    assert after["result"] == {"name": "s"} and after["error"] is None
    assert await world.job(job.id) == ended


async def test_postgres_notifies_a_claim_and_an_end_at_commit_only(world: World) -> None:
    store = world.store
    if not store.is_postgres:
        return
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("s")
    )
    url = store.engine.url.set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    heard: list[str] = []
    channel = f"{store.channel_prefix}_job"
    await conn.add_listener(channel, lambda *args: heard.append(args[3]))
    try:
        # A claim rolled back says nothing.
        with pytest.raises(RolledBack):
            async with store.transaction() as tx:
                assert await tx.claim_jobs(_request(world, "w", 1))
                raise RolledBack
        await asyncio.sleep(0.2)
        assert heard == []
        [claimed] = await world.claim("w")
        # A finish by a worker without the lease writes nothing and says nothing.
        async with store.transaction() as tx:
            assert not await tx.finish_job(claimed, "other")
        async with store.transaction() as tx:
            await queue.finish(tx, claimed, "w", world.clock.now(), result={"name": "s"})
        for _ in range(50):
            if len(heard) >= 2:
                break
            await asyncio.sleep(0.05)
        assert heard == [job.id, job.id]
        assert (await world.job(job.id)).status is JobStatus.COMPLETED
    finally:
        await conn.close()


_UNICODE_JOURNAL = {"step": "écrit ☃", "n": 3, "nested": {"ok": True, "none": None}}


@pytest.mark.parametrize(
    ("raw", "plain", "values"),
    [
        (
            sql._CLAIM_JOB_RAW,
            sql._CLAIM_JOB,
            {"b_attempts": 2, "b_worker": "w-1"},
        ),
        (
            sql._FINISH_JOB_RAW,
            sql._FINISH_JOB.values(**sql._FINISH_JOB_VALUES),
            {
                "b_status": "completed",
                "b_journal": _UNICODE_JOURNAL,
                "b_progress": 100,
                "b_result": {"snapshot": "ünï", "sizes": [1, 2]},
                "b_error": None,
            },
        ),
        (
            sql._FINISH_JOB_RAW,
            sql._FINISH_JOB.values(**sql._FINISH_JOB_VALUES),
            {
                "b_status": "failed",
                "b_journal": None,
                "b_progress": 40,
                "b_result": None,
                "b_error": {"code": "hypervisor_error", "detail": 'ü "quoted" \\ back'},
            },
        ),
        (sql._RECORD_JOURNAL_RAW, sql._RECORD_JOURNAL, {"journal": _UNICODE_JOURNAL}),
    ],
    ids=["claim", "finish-completed", "finish-failed", "journal"],
)
async def test_a_raw_write_writes_what_sqlalchemy_writes(
    world: World, raw: Any, plain: Any, values: dict[str, Any]
) -> None:
    """``store.raw.RawWrite`` (the DB-API cursor, values through their types' bind processors) leaves
    the row exactly as ``conn.execute`` of the same statement with the same values does:
    JSON (unicode, nesting, nulls, SQL NULL), timestamps, the lease condition."""
    # Two jobs alike, both claimed by the same worker (the finish and journal writes are
    # conditional on the lease).
    for name in ("a", "b"):
        vps = await world.add_vps(name)
        await world.runtime.services.snapshots.create(world.principal, vps.id, CreateSnapshot("s"))
    async with world.store.transaction() as tx:
        taken = await tx.claim_jobs(_request(world, "w-1", 2))
    assert len(taken) == 2
    first, second = (job.id for job in taken)
    stamp = world.clock.now() + timedelta(seconds=7, microseconds=123457)
    common = {"b_worker": "w-1", "b_started": stamp, "b_until": stamp, "b_finished": stamp}
    async with world.store.engine.begin() as conn:
        raw_written = await raw.run(conn, {**common, **values, "b_id": first})
        plain_written = await conn.execute(plain, {**common, **values, "b_id": second})
    assert raw_written.rowcount == plain_written.rowcount == 1

    by_raw, by_plain = await _row(world, first), await _row(world, second)
    differ_anyway = {"id", "vps_id", "snapshot_name", "created_at", "idempotency_key"}
    assert {k: v for k, v in by_raw.items() if k not in differ_anyway} == {
        k: v for k, v in by_plain.items() if k not in differ_anyway
    }
    # And the write did happen: the values are in the row.
    for key in ("journal", "result", "error"):
        bind = {"journal": ("b_journal", "journal"), "result": ("b_result",), "error": ("b_error",)}
        given = [values[b] for b in bind[key] if b in values]
        if given:
            assert by_raw[key] == given[0]
