"""Crash recovery: expired leases are re-queued, handlers re-run idempotently, and a worker
that lost its lease never writes the job's final state."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from vpsnap.domain.errors import HypervisorError
from vpsnap.domain.model import Consistency, Job, JobLane, JobStatus, LaunchSpec, PowerState
from vpsnap.domain.ports import RestorePoint, SnapshotRequest
from vpsnap.drivers.fake import FakeDriver
from vpsnap.jobs.handlers import HANDLERS
from vpsnap.jobs.worker import Claim, Worker
from vpsnap.scheduler.reaper import requeue_orphans
from vpsnap.services.snapshots import CreateSnapshot

from .conftest import DISKS, LEASE_SECONDS, World


async def _claim_as(world: World, worker_id: str) -> Job:
    """What a worker's claim does, without running anything afterwards (it "dies")."""
    [job] = await world.claim(worker_id)
    return job


async def _reap(world: World) -> list[str]:
    return await requeue_orphans(
        world.store, world.runtime.events, world.clock, "local", all_in_progress=False
    )


def _creates(driver: FakeDriver) -> int:
    return sum(1 for operation, _ in driver.calls if operation == "create")


async def test_expired_lease_is_requeued(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    claimed = await _claim_as(world, "dead-worker")
    assert (claimed.status, claimed.attempts, claimed.lease_owner) == (
        JobStatus.IN_PROGRESS,
        1,
        "dead-worker",
    )
    assert claimed.lease_expires_at == world.clock.now() + timedelta(seconds=LEASE_SECONDS)

    world.clock.advance(seconds=LEASE_SECONDS + 1)
    assert await _reap(world) == [job.id]

    requeued = await world.job(job.id)
    assert requeued.status is JobStatus.QUEUED
    assert (requeued.lease_owner, requeued.lease_expires_at) == (None, None)
    assert requeued.attempts == 1
    assert requeued.started_at == claimed.started_at


async def test_a_live_lease_is_not_requeued(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    await _claim_as(world, "busy-worker")

    world.clock.advance(seconds=LEASE_SECONDS - 1)
    assert await _reap(world) == []

    current = await world.job(job.id)
    assert (current.status, current.lease_owner) == (JobStatus.IN_PROGRESS, "busy-worker")
    # Nothing is queued for another worker to take.
    assert await world.runtime.worker().run_one() is False


async def test_reaper_leaves_other_nodes_alone(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    await _claim_as(world, "dead-worker")
    world.clock.advance(seconds=LEASE_SECONDS + 1)

    assert (
        await requeue_orphans(
            world.store, world.runtime.events, world.clock, "node-2", all_in_progress=False
        )
        == []
    )
    assert (await world.job(job.id)).status is JobStatus.IN_PROGRESS


async def test_create_rerun_after_the_hypervisor_work_completes_exactly_once(
    world: World,
) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    claimed = await _claim_as(world, "dead-worker")
    # The worker took the snapshot on the hypervisor, then died before recording it.
    await HANDLERS[claimed.type].perform(
        world.driver, claimed, vps, world.journal(claimed, "dead-worker")
    )
    world.clock.advance(seconds=LEASE_SECONDS + 1)
    assert await _reap(world) == [job.id]

    assert await world.run_all() == 1

    done = await world.job(job.id)
    assert done.status is JobStatus.COMPLETED
    assert done.attempts == 2
    assert done.result == {"name": "one"}
    assert _creates(world.driver) == 1
    assert [(p.name, p.disks) for p in await world.driver.list_restore_points(vps)] == [
        ("one", DISKS)
    ]
    assert await world.statuses(vps.id) == {"one": "available"}
    assert (await world.vps(vps.id)).current_snapshot == "one"
    assert await world.run_all() == 0
    # A freeze leaves no trace on disk: the re-run can only claim crash, and says why.
    async with world.store.transaction() as tx:
        recorded = await tx.get_snapshot(vps.id, "one")
    assert recorded is not None
    assert recorded.consistency_reason is not None
    assert recorded.consistency_reason.startswith("the job was re-run after its worker stopped")


async def test_create_rerun_of_a_live_snapshot_with_ram_keeps_its_consistency(
    world: World,
) -> None:
    vps = await world.add_vps(machine=LaunchSpec(memory_mib=64, cpus=1))
    world.driver.set_power_state(vps.id, PowerState.RUNNING)
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("live", include_memory_state=True)
    )
    claimed = await _claim_as(world, "dead-worker")
    await HANDLERS[claimed.type].perform(
        world.driver, claimed, vps, world.journal(claimed, "dead-worker")
    )
    world.clock.advance(seconds=LEASE_SECONDS + 1)
    await _reap(world)

    assert await world.run_all() == 1

    assert (await world.job(job.id)).status is JobStatus.COMPLETED
    snapshot = await world.snapshot(vps.id, "live")
    assert snapshot is not None
    # The re-run finds the RAM state on disk: it must not downgrade the snapshot to "crash".
    assert (snapshot.consistency, snapshot.includes_memory_state) == (Consistency.MEMORY, True)
    assert _creates(world.driver) == 1


async def test_create_rerun_after_dying_half_way_redoes_every_disk(world: World) -> None:
    vps = await world.add_vps(disks=DISKS)
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    claimed = await _claim_as(world, "dead-worker")
    # It recorded its intent, then the first disk got the snapshot, the second did not.
    await world.journal(claimed, "dead-worker").open_intent(vps, "one")
    first_disk_only = dataclasses.replace(vps, disks=DISKS[:1])
    await world.driver.create_snapshot(first_disk_only, SnapshotRequest("one"))
    assert [p.disks for p in await world.driver.list_restore_points(vps)] == [DISKS[:1]]
    world.clock.advance(seconds=LEASE_SECONDS + 1)
    await _reap(world)

    assert await world.run_all() == 1

    done = await world.job(job.id)
    assert (done.status, done.attempts) == (JobStatus.COMPLETED, 2)
    assert await world.driver.list_restore_points(vps) == [
        RestorePoint("one", DISKS, 0, world.clock.now())
    ]
    assert await world.statuses(vps.id) == {"one": "available"}


async def test_create_rerun_when_nothing_was_done_creates_it(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    await _claim_as(world, "dead-worker")
    world.clock.advance(seconds=LEASE_SECONDS + 1)
    await _reap(world)

    await world.run_all()

    assert (await world.job(job.id)).status is JobStatus.COMPLETED
    assert [p.name for p in await world.driver.list_restore_points(vps)] == ["one"]
    assert _creates(world.driver) == 1


async def test_delete_rerun_after_the_hypervisor_work_completes(world: World) -> None:
    vps = await world.add_vps()
    snapshots = world.runtime.services.snapshots
    await snapshots.create(world.principal, vps.id, CreateSnapshot("one"))
    await world.run_all()
    job = await snapshots.delete(world.principal, vps.id, "one")
    claimed = await _claim_as(world, "dead-worker")
    await HANDLERS[claimed.type].perform(
        world.driver, claimed, vps, world.journal(claimed, "dead-worker")
    )
    world.clock.advance(seconds=LEASE_SECONDS + 1)
    await _reap(world)

    await world.run_all()

    done = await world.job(job.id)
    assert (done.status, done.attempts) == (JobStatus.COMPLETED, 2)
    assert await world.statuses(vps.id) == {}
    assert await world.driver.list_restore_points(vps) == []


async def test_startup_requeues_every_in_progress_job_of_the_node(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    await _claim_as(world, "previous-process")

    ids = await requeue_orphans(
        world.store, world.runtime.events, world.clock, "local", all_in_progress=True
    )

    assert ids == [job.id]
    assert (await world.job(job.id)).status is JobStatus.QUEUED


async def test_heartbeat_keeps_a_running_jobs_lease_alive(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    world.driver.block("create")
    worker = world.worker("alive", lease_seconds=0.3)
    task = asyncio.create_task(worker.run_one())
    await world.driver.wait_blocked("create")
    first_lease = (await world.job(job.id)).lease_expires_at
    assert first_lease is not None

    world.clock.advance(seconds=10)
    # The heartbeat runs every lease/3 (0.1 s) of real time and extends from the clock.
    for _ in range(100):
        await asyncio.sleep(0.02)
        if (await world.job(job.id)).lease_expires_at != first_lease:
            break
    extended = (await world.job(job.id)).lease_expires_at
    assert extended == world.clock.now() + timedelta(seconds=0.3)
    assert await _reap(world) == []

    world.driver.release("create")
    assert await task is True
    assert (await world.job(job.id)).status is JobStatus.COMPLETED


# -- a worker that lost its lease --------------------------------------------------------------


async def _start_blocked(world: World, worker_id: str, driver: FakeDriver) -> asyncio.Task[bool]:
    driver.block("create")
    task = asyncio.create_task(world.worker(worker_id, driver=driver).run_one())
    await driver.wait_blocked("create")
    return task


async def test_stale_worker_failing_after_the_takeover_does_not_undo_the_job(
    world: World,
) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    stale_driver = FakeDriver(world.clock)
    stale_driver.fail_next("create", HypervisorError("socket closed"))
    stale = await _start_blocked(world, "stale", stale_driver)

    world.clock.advance(seconds=LEASE_SECONDS + 1)
    assert await _reap(world) == [job.id]
    assert await world.worker("fresh").run_one() is True
    completed = await world.job(job.id)
    assert (completed.status, completed.attempts) == (JobStatus.COMPLETED, 2)

    stale_driver.release("create")
    assert await stale is True

    assert await world.job(job.id) == completed
    assert await world.statuses(vps.id) == {"one": "available"}
    assert (await world.vps(vps.id)).current_snapshot == "one"


async def test_stale_worker_finishing_while_the_new_owner_runs_writes_nothing(
    world: World,
) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    stale_driver = FakeDriver(world.clock)
    stale = await _start_blocked(world, "stale", stale_driver)
    world.clock.advance(seconds=LEASE_SECONDS + 1)
    await _reap(world)
    # The new owner's re-run starts by listing what exists: hold it there.
    world.driver.block("list")
    fresh = asyncio.create_task(world.worker("fresh").run_one())
    await world.driver.wait_blocked("list")
    taken_over = await world.job(job.id)
    assert (taken_over.status, taken_over.lease_owner) == (JobStatus.IN_PROGRESS, "fresh")

    stale_driver.release("create")
    assert await stale is True

    assert await world.job(job.id) == taken_over
    assert await world.statuses(vps.id) == {"one": "creating"}
    assert (await world.vps(vps.id)).current_snapshot is None

    world.driver.release("list")
    assert await fresh is True
    done = await world.job(job.id)
    assert (done.status, done.attempts) == (JobStatus.COMPLETED, 2)
    assert await world.statuses(vps.id) == {"one": "available"}


async def test_stale_worker_finishing_after_the_requeue_leaves_the_job_queued(
    world: World,
) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )
    stale_driver = FakeDriver(world.clock)
    stale = await _start_blocked(world, "stale", stale_driver)
    world.clock.advance(seconds=LEASE_SECONDS + 1)
    await _reap(world)

    stale_driver.release("create")
    assert await stale is True

    requeued = await world.job(job.id)
    assert (requeued.status, requeued.lease_owner, requeued.attempts) == (
        JobStatus.QUEUED,
        None,
        1,
    )
    assert await world.statuses(vps.id) == {"one": "creating"}
    assert await world.run_all() == 1
    assert (await world.job(job.id)).status is JobStatus.COMPLETED


async def test_stale_worker_does_not_promote_the_next_job(world: World) -> None:
    vps = await world.add_vps()
    snapshots = world.runtime.services.snapshots
    first = await snapshots.create(world.principal, vps.id, CreateSnapshot("a"))
    second = await snapshots.create(world.principal, vps.id, CreateSnapshot("b"))
    stale_driver = FakeDriver(world.clock)
    stale = await _start_blocked(world, "stale", stale_driver)
    world.clock.advance(seconds=LEASE_SECONDS + 1)
    await _reap(world)

    stale_driver.release("create")
    await stale

    # Only one job of the VPS may be queued or running: b still waits behind a.
    assert (await world.job(first.id)).status is JobStatus.QUEUED
    assert (await world.job(second.id)).status is JobStatus.PENDING


@pytest.mark.parametrize("on_disks", ["all", "first"])
async def test_rerun_does_not_adopt_or_delete_a_snapshot_vpsnap_did_not_make(
    world: World, on_disks: str
) -> None:
    """A snapshot of the same name that an operator made by hand, before the job existed, is
    refused on a first attempt (snapshot_name_taken) and must be refused on a re-run too.

    A restore point older than the job's first start is not the job's own: adopting it would
    let a later delete remove the operator's snapshot, and deleting it would destroy it now.
    """
    vps = await world.add_vps(disks=DISKS)
    disks = DISKS if on_disks == "all" else DISKS[:1]
    await world.driver.create_snapshot(
        dataclasses.replace(vps, disks=disks), SnapshotRequest("manual")
    )
    foreign = await world.driver.list_restore_points(vps)
    world.clock.advance(minutes=1)
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("manual")
    )
    await _claim_as(world, "dead-worker")  # died before it reached the hypervisor
    world.clock.advance(seconds=LEASE_SECONDS + 1)
    await _reap(world)

    await world.run_all()

    failed = await world.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error["code"] == "snapshot_name_taken"
    assert await world.driver.list_restore_points(vps) == foreign
    assert await world.statuses(vps.id) == {}


async def test_a_job_whose_worker_keeps_dying_is_given_up(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("poison")
    )
    for attempt in range(5):
        await _claim_as(world, f"dead-worker-{attempt}")
        world.clock.advance(seconds=LEASE_SECONDS + 1)
        assert await _reap(world) == [job.id]

    assert await world.runtime.worker().run_one() is True  # sixth claim: gives up
    failed = await world.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.attempts == 6
    assert failed.error is not None
    assert "Gave up after 5 attempts" in failed.error["detail"]
    assert _creates(world.driver) == 0
    assert await world.statuses(vps.id) == {}


# -- issue 9, kind 11: re-runs finish from the recorded steps ----------------------------------


async def test_a_restore_rerun_after_a_crash_between_stop_and_start_ends_running(
    world: World,
) -> None:
    """SIGKILL during a disk-only restore of a running VM, after QEMU exited: the re-run must
    end in the power state the user had (running), and report running → running."""
    vps = await world.add_vps(machine=LaunchSpec(memory_mib=64, cpus=1))
    await world.runtime.services.snapshots.create(world.principal, vps.id, CreateSnapshot("one"))
    await world.run_all()
    world.driver.set_power_state(vps.id, PowerState.RUNNING)
    job = await world.runtime.services.snapshots.restore(world.principal, vps.id, "one")
    claimed = await _claim_as(world, "dead-worker")
    # The first attempt recorded the power state, stopped the VM, and died.
    await world.journal(claimed, "dead-worker").record(powerStateBefore="running")
    world.driver.set_power_state(vps.id, PowerState.STOPPED)
    world.clock.advance(seconds=LEASE_SECONDS + 1)
    assert await _reap(world) == [job.id]

    assert await world.run_all() == 1

    done = await world.job(job.id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.result == {
        "name": "one",
        "powerStateBefore": "running",
        "powerStateAfter": "running",
    }
    assert await world.driver.power_state(vps) is PowerState.RUNNING


async def test_stop_hands_back_a_job_that_outlives_the_grace_and_the_next_run_finishes_it(
    world: World,
) -> None:
    """SIGTERM while a long job runs: the worker stops claiming, waits ``grace_seconds``, then
    puts the job back in the queue (not counting the attempt) instead of leaving it
    ``in_progress`` until the next start."""
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("slow")
    )
    world.driver.block("create")
    worker = dataclasses.replace(world.runtime.worker(), grace_seconds=0.2)
    running = asyncio.create_task(worker.run())
    await world.driver.wait_blocked("create")
    worker.stop()
    await asyncio.wait_for(running, 5)

    handed = await world.job(job.id)
    assert (handed.status, handed.lease_owner, handed.attempts) == (JobStatus.QUEUED, None, 0)
    # The journal keeps what the attempt recorded: its intent to write "slow".
    assert handed.journal["intent"]["name"] == "slow"
    world.driver.release("create")
    assert await world.run_all() == 1
    done = await world.job(job.id)
    assert (done.status, done.attempts) == (JobStatus.COMPLETED, 1)
    assert _creates(world.driver) == 2  # the cut attempt never got past the gate
    assert [p.name for p in await world.driver.list_restore_points(vps)] == ["slow"]


async def test_stop_lets_a_job_within_the_grace_finish(world: World) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("quick")
    )
    world.driver.block("create")
    worker = dataclasses.replace(world.runtime.worker(), grace_seconds=5)
    running = asyncio.create_task(worker.run())
    await world.driver.wait_blocked("create")
    worker.stop()
    await asyncio.sleep(0.1)
    world.driver.release("create")
    await asyncio.wait_for(running, 5)
    assert (await world.job(job.id)).status is JobStatus.COMPLETED


class _ClaimFailsOnce(Worker):
    """A worker whose first claim meets a database that went away (a PostgreSQL restart)."""

    failed = False

    async def _claim(self, free: dict[JobLane, int]) -> list[Claim]:
        if not self.failed:
            self.failed = True
            raise ConnectionRefusedError("the database is restarting")
        return await super()._claim(free)


async def test_a_failed_claim_does_not_end_the_worker(world: World) -> None:
    """The worker outlives a claim that fails (its node would otherwise take no more jobs
    while its agent looks alive) and claims again after a pause."""
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("after-restart")
    )
    base = world.runtime.worker()
    worker = _ClaimFailsOnce(
        **{f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
    )
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):  # a dead worker would leave the job queued forever
            done = await world.runtime.services.jobs.wait(world.principal, job.id, 5)
            while not done.status.is_terminal:
                done = await world.runtime.services.jobs.wait(world.principal, job.id, 5)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 5)
    assert worker.failed
    assert done.status is JobStatus.COMPLETED
