"""JobService.get/wait (the long-poll) and the background worker loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import JobNotFound
from vpsnap.domain.model import JobStatus
from vpsnap.services.snapshots import CreateSnapshot
from vpsnap.store.sql import SqlTransaction

from .conftest import World

LONG = 30.0
"""A wait timeout no test should ever reach: returning well before it shows a wake-up."""


async def test_wait_returns_at_once_for_a_finished_job(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    await world.run_all()

    started = time.monotonic()
    got = await world.runtime.services.jobs.wait(world.principal, job.id, LONG)

    assert time.monotonic() - started < 1.0
    assert got == await world.job(job.id)
    assert got.status is JobStatus.COMPLETED


async def test_wait_without_timeout_is_a_plain_read(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    got = await world.runtime.services.jobs.wait(world.principal, job.id, 0)
    assert got == job


async def test_wait_returns_as_soon_as_the_status_changes(world: World) -> None:
    vps = await world.add_vps()
    jobs = world.runtime.services.jobs
    world.driver.block("create")
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    waiting = asyncio.create_task(jobs.wait(world.principal, job.id, LONG))
    # Nothing changes while no worker runs: the wait stays parked.
    done, _ = await asyncio.wait({waiting}, timeout=0.3)
    assert not done

    worker = world.runtime.worker()
    worker_task = asyncio.create_task(worker.run())
    try:
        started = time.monotonic()
        in_progress = await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 5
        assert in_progress.status is JobStatus.IN_PROGRESS
        assert in_progress.attempts == 1
        await world.driver.wait_blocked("create")

        waiting = asyncio.create_task(jobs.wait(world.principal, job.id, LONG))
        done, _ = await asyncio.wait({waiting}, timeout=0.3)
        assert not done
        world.driver.release("create")
        completed = await asyncio.wait_for(waiting, 5)
        assert completed.status is JobStatus.COMPLETED
        assert completed == await world.job(job.id)
    finally:
        world.driver.release("create")
        worker.stop()
        await worker_task


async def test_wait_times_out_with_the_unchanged_job(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )

    started = time.monotonic()
    got = await world.runtime.services.jobs.wait(world.principal, job.id, 0.3)

    assert 0.3 <= time.monotonic() - started < 5
    assert got == job
    assert got.status is JobStatus.QUEUED


async def test_wait_ignores_a_change_that_keeps_the_status(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    started = time.monotonic()
    waiting = asyncio.create_task(world.runtime.services.jobs.wait(world.principal, job.id, 0.5))
    await asyncio.sleep(0.1)
    world.runtime.events.job_changed(job.id)  # e.g. a notifier without the new state

    got = await waiting
    assert time.monotonic() - started >= 0.5
    assert got == job


async def test_another_accounts_job_is_not_found(world: World, stranger: Principal) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    jobs = world.runtime.services.jobs

    with pytest.raises(JobNotFound):
        await jobs.get(stranger, job.id)
    with pytest.raises(JobNotFound):
        await jobs.wait(stranger, job.id, 0)
    started = time.monotonic()
    with pytest.raises(JobNotFound):
        await jobs.wait(stranger, job.id, LONG)
    assert time.monotonic() - started < 1.0
    with pytest.raises(JobNotFound) as unknown:
        await jobs.wait(world.principal, "job_01hxa3b4c5d6e7f8g9h0j1k2m3", 0.1)
    assert (
        unknown.value.detail == "No job with id 'job_01hxa3b4c5d6e7f8g9h0j1k2m3' in this account."
    )


async def test_background_worker_runs_different_vpses_in_parallel_one_job_per_vps(
    world: World,
) -> None:
    web = await world.add_vps("web")
    db = await world.add_vps("db")
    snapshots = world.runtime.services.snapshots
    world.driver.block("create")
    jobs = [
        await snapshots.create(world.principal, web.id, CreateSnapshot("a")),
        await snapshots.create(world.principal, web.id, CreateSnapshot("b")),
        await snapshots.create(world.principal, db.id, CreateSnapshot("a")),
    ]
    worker = world.runtime.worker()
    worker_task = asyncio.create_task(worker.run())
    try:
        for _ in range(250):
            if len(world.driver.changes()) >= 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # room for a wrong third call to show up
        assert sorted(world.driver.changes()) == sorted([("create", web.id), ("create", db.id)])

        world.driver.release("create")
        for job in jobs:
            done = await world.runtime.services.jobs.wait(world.principal, job.id, 10)
            while not done.status.is_terminal:
                done = await world.runtime.services.jobs.wait(world.principal, job.id, 10)
            assert done.status is JobStatus.COMPLETED
    finally:
        world.driver.release("create")
        worker.stop()
        await worker_task
    assert await world.statuses(web.id) == {"a": "available", "b": "available"}
    assert await world.statuses(db.id) == {"a": "available"}


async def test_stopped_worker_finishes_the_job_in_flight(world: World) -> None:
    vps = await world.add_vps()
    world.driver.block("create")
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    worker = world.runtime.worker()
    worker_task = asyncio.create_task(worker.run())
    await world.driver.wait_blocked("create")

    worker.stop()
    done, _ = await asyncio.wait({worker_task}, timeout=0.2)
    assert not done  # it waits for the job rather than abandoning it
    world.driver.release("create")
    await asyncio.wait_for(worker_task, 5)

    assert (await world.job(job.id)).status is JobStatus.COMPLETED


def _counting_claims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the store's claim (a write transaction's work) in a list's length."""
    calls: list[int] = []
    real = SqlTransaction.claim_jobs

    async def counted(self: SqlTransaction, request: object) -> object:
        calls.append(1)
        return await real(self, request)  # type: ignore[arg-type]

    monkeypatch.setattr(SqlTransaction, "claim_jobs", counted)
    return calls


async def test_an_idle_worker_claims_nothing(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """After its job ends the worker wakes (a slot is free) and finds nothing queued: it reads,
    it does not take the write lock for an empty claim (docs/performance.md, "The job path")."""
    claims = _counting_claims(monkeypatch)
    looks: list[int] = []
    real_look = SqlTransaction.has_queued_jobs

    async def counted_look(self: SqlTransaction, node: str) -> bool:
        looks.append(1)
        return await real_look(self, node)

    monkeypatch.setattr(SqlTransaction, "has_queued_jobs", counted_look)
    vps = await world.add_vps()
    worker = world.runtime.worker()
    worker_task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.2)  # the first wake-up, nothing queued yet
        assert claims == []
        job = await world.runtime.services.snapshots.create(
            world.principal, vps.id, CreateSnapshot("one")
        )
        done = await world.runtime.services.jobs.wait(world.principal, job.id, 5)
        while not done.status.is_terminal:
            done = await world.runtime.services.jobs.wait(world.principal, job.id, 5)
        assert done.status is JobStatus.COMPLETED
        await asyncio.sleep(0.3)  # the wake-up after the job's end has run
        # The job's claim, and the one in its end's own transaction (Worker._finish: what a
        # drain's next job is taken by) that found nothing; no write transaction of its own.
        assert len(claims) == 2
        # Looked at start only: the wake-up by the queued job claimed straight away (the hot
        # path of a create: no read before the claim), and the job's end claimed already.
        assert len(looks) == 1
    finally:
        worker.stop()
        await worker_task


async def test_a_job_queued_while_the_worker_idles_starts_at_once(world: World) -> None:
    vps = await world.add_vps()
    worker = world.runtime.worker()
    worker_task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.2)  # idle, parked on its wake-up event (timer: 5 s)
        started = time.monotonic()
        job = await world.runtime.services.snapshots.create(
            world.principal, vps.id, CreateSnapshot("one")
        )
        done = await world.runtime.services.jobs.wait(world.principal, job.id, LONG)
        while not done.status.is_terminal:
            done = await world.runtime.services.jobs.wait(world.principal, job.id, LONG)
        assert done.status is JobStatus.COMPLETED
        assert time.monotonic() - started < 2.0
    finally:
        worker.stop()
        await worker_task


async def test_a_failed_look_at_the_queue_leaves_the_decision_to_the_claim(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: SqlTransaction, node: str) -> bool:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(SqlTransaction, "has_queued_jobs", broken)
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    worker = world.runtime.worker()
    worker_task = asyncio.create_task(worker.run())
    try:
        done = await world.runtime.services.jobs.wait(world.principal, job.id, 5)
        while not done.status.is_terminal:
            done = await world.runtime.services.jobs.wait(world.principal, job.id, 5)
        assert done.status is JobStatus.COMPLETED
    finally:
        worker.stop()
        await worker_task
