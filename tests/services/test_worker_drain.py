"""The worker loop draining a queue: a job's end claims the next jobs in its own transaction
(``Worker._finish``, docs/performance.md "Draining queued creates"), without giving up a slot
limit, an account's share, per-VPS order or a job's end."""

from __future__ import annotations

import asyncio
import itertools
import sys
from typing import TYPE_CHECKING, Any

import pytest

from vpsnap.domain.model import Job, JobLane, JobStatus
from vpsnap.drivers.fake import FakeDriver
from vpsnap.jobs.worker import Worker
from vpsnap.services.snapshots import CreateSnapshot

if TYPE_CHECKING:
    from vpsnap.domain.auth import Principal

    from .conftest import World


async def _queue(world: World, principal: Principal, vps_ids: list[str], per_vps: int) -> list[Job]:
    """``per_vps`` creates on every VPS, interleaved (a, b, ... by VPS in turn)."""
    snapshots = world.runtime.services.snapshots
    return [
        await snapshots.create(principal, vps_id, CreateSnapshot(f"s{i}"))
        for i in range(per_vps)
        for vps_id in vps_ids
    ]


async def _drain(world: World, worker: Worker, jobs: list[Job]) -> list[Job]:
    """Run the worker loop until every job is terminal; the jobs as stored then."""
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(500):
            done = [await world.job(job.id) for job in jobs]
            if all(job.status.is_terminal for job in done):
                return done
            await asyncio.sleep(0.02)
        raise AssertionError("the queue was not drained within 10 s")
    finally:
        worker.stop()
        await task


def _track_overlap(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Counts creates running at once (in all, and per VPS), each held for a moment."""
    seen: dict[str, Any] = {"now": 0, "max": 0, "vpses": set(), "same_vps": 0}
    real = FakeDriver.create_snapshot

    async def tracked(self: FakeDriver, vps: Any, request: Any) -> Any:
        if vps.id in seen["vpses"]:
            seen["same_vps"] += 1
        seen["vpses"].add(vps.id)
        seen["now"] += 1
        seen["max"] = max(seen["max"], seen["now"])
        try:
            await asyncio.sleep(0.02)
            return await real(self, vps, request)
        finally:
            seen["now"] -= 1
            seen["vpses"].discard(vps.id)

    monkeypatch.setattr(FakeDriver, "create_snapshot", tracked)
    return seen


def _count_claim_transactions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Claims in a transaction of their own (the loop's), not chained to a job's end."""
    calls: list[int] = []
    real = Worker._claim

    async def counted(self: Worker, free: dict[JobLane, int]) -> Any:
        calls.append(1)
        return await real(self, free)

    monkeypatch.setattr(Worker, "_claim", counted)
    return calls


def _chained() -> bool:
    """Whether the patched ``_claim_in`` calling this was called by a job's end
    (``_write_end``) rather than by the loop's claim (``_claim``)."""
    frame = sys._getframe(2)
    return frame.f_code.co_name == "_write_end"


def _assert_fifo(done: list[Job]) -> None:
    by_vps: dict[str, list[Job]] = {}
    for job in done:  # in the order they were queued
        by_vps.setdefault(job.vps_id, []).append(job)
    for jobs in by_vps.values():
        for before, after in itertools.pairwise(jobs):
            assert before.finished_at is not None and after.started_at is not None
            assert before.finished_at <= after.started_at


async def test_each_end_claims_the_next_job_without_a_claim_of_its_own(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = _count_claim_transactions(monkeypatch)
    vpses = [(await world.add_vps(f"v{n}", slots=5)).id for n in range(3)]
    jobs = await _queue(world, world.principal, vpses, 3)
    worker = world.runtime.worker()
    worker.concurrency = 1

    done = await _drain(world, worker, jobs)

    assert [job.status for job in done] == [JobStatus.COMPLETED] * 9
    assert all(job.attempts == 1 for job in done)
    # The first job by the loop's claim; each of the other eight by the end before it.
    assert len(claims) == 1
    _assert_fifo(done)


async def test_chained_claims_keep_the_slots_and_the_accounts_share(
    world: World, stranger: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _track_overlap(monkeypatch)
    ours = [(await world.add_vps(f"a{n}", slots=5)).id for n in range(3)]
    theirs = [(await world.add_vps(f"m{n}", slots=5, account_name="mallory")).id for n in range(3)]
    jobs = await _queue(world, world.principal, ours, 3)
    jobs += await _queue(world, stranger, theirs, 3)
    worker = world.runtime.worker()
    worker.concurrency = 3  # one account: at most 2 at once

    done = await _drain(world, worker, jobs)

    assert all(job.status is JobStatus.COMPLETED for job in done)
    assert seen["max"] == 3
    assert seen["same_vps"] == 0
    _assert_fifo(done)


async def test_one_account_never_takes_the_last_slot(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _track_overlap(monkeypatch)
    vpses = [(await world.add_vps(f"v{n}", slots=5)).id for n in range(4)]
    jobs = await _queue(world, world.principal, vpses, 3)
    worker = world.runtime.worker()
    worker.concurrency = 3

    done = await _drain(world, worker, jobs)

    assert all(job.status is JobStatus.COMPLETED for job in done)
    assert seen["max"] == 2
    _assert_fifo(done)


async def test_a_failed_chained_claim_still_ends_the_job(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[int] = []
    real = Worker._claim_in

    async def failing_once(self: Worker, tx: Any, free: dict[JobLane, int]) -> Any:
        if not failures and _chained():
            failures.append(1)
            raise RuntimeError("boom")
        return await real(self, tx, free)

    monkeypatch.setattr(Worker, "_claim_in", failing_once)
    vps = await world.add_vps(slots=5)
    jobs = await _queue(world, world.principal, [vps.id], 3)
    worker = world.runtime.worker()
    worker.concurrency = 1

    done = await _drain(world, worker, jobs)

    assert failures == [1]
    assert [job.status for job in done] == [JobStatus.COMPLETED] * 3
    assert all(job.attempts == 1 for job in done)
    _assert_fifo(done)


async def test_a_loop_claim_does_not_take_a_slot_a_chained_claim_holds(world: World) -> None:
    vpses = [(await world.add_vps(f"v{n}", slots=5)).id for n in range(2)]
    await _queue(world, world.principal, vpses, 1)
    worker = world.runtime.worker()
    worker.concurrency = 1
    worker.slow_concurrency = 0

    held = worker._reserve(worker._free_slots())
    assert held == {JobLane.QUICK: 1}
    await worker.claim_available(look_first=False)
    assert worker._running == {}  # the reserved slot was the only one
    worker._release(held)
    await worker.claim_available(look_first=False)
    try:
        assert len(worker._running) == 1
    finally:
        worker.stop()
        await asyncio.gather(*worker._running, return_exceptions=True)


async def test_a_stop_hands_back_what_a_jobs_end_claimed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    vps = await world.add_vps(slots=5)
    jobs = await _queue(world, world.principal, [vps.id], 2)
    worker = world.runtime.worker()
    worker.concurrency = 1
    real = Worker._claim_in

    async def stop_meanwhile(self: Worker, tx: Any, free: dict[JobLane, int]) -> Any:
        claimed = await real(self, tx, free)
        if _chained():
            self.stop()  # SIGTERM while the end (and its claim) is being written
        return claimed

    monkeypatch.setattr(Worker, "_claim_in", stop_meanwhile)
    await asyncio.wait_for(worker.run(), 10)

    first, second = [await world.job(job.id) for job in jobs]
    assert first.status is JobStatus.COMPLETED
    assert second.status is JobStatus.QUEUED
    assert second.attempts == 0 and second.lease_owner is None
    assert world.driver.changes() == [("create", vps.id)]


async def test_a_create_queued_behind_another_wakes_no_worker(world: World) -> None:
    """A pending job cannot be claimed; its predecessor's end promotes it and wakes (or claims)."""
    vps = await world.add_vps(slots=5)
    snapshots = world.runtime.services.snapshots
    events = world.runtime.events
    first = await snapshots.create(world.principal, vps.id, CreateSnapshot("one"))
    assert first.status is JobStatus.QUEUED
    assert events.work_available.is_set() and events.queued_since_claim
    events.work_available.clear()
    events.queued_since_claim = False

    second = await snapshots.create(world.principal, vps.id, CreateSnapshot("two"))

    assert second.status is JobStatus.PENDING
    assert not events.work_available.is_set() and not events.queued_since_claim
    worker = world.runtime.worker()
    done = await _drain(world, worker, [first, second])
    assert [job.status for job in done] == [JobStatus.COMPLETED] * 2
