"""Issue 9, kind 11c: one tenant's slow work never starves everyone.

Invariants (docs/how-snapshots-work.md, "Fair queues"): long waits (graceful shutdown, RAM
save/load) run in a lane of their own, so they never hold the slots quick jobs need; one account
never holds every slot of a lane; a VPS's queue is bounded (``vps_queue_full``).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.errors import VpsQueueFull
from vpsnap.domain.model import JobLane, JobStatus, LaunchSpec, PowerAction, PowerState
from vpsnap.services.snapshots import CreateSnapshot

from .conftest import World

VM = LaunchSpec(memory_mib=64, cpus=1)


async def _second_tenant(world: World) -> Principal:
    account = await world.runtime.services.accounts.create_account("bob")
    return Principal(account.id, frozenset({Scope.WRITE_ALL}))


async def _wait_status(world: World, job_id: str, status: JobStatus, seconds: float = 5) -> None:
    for _ in range(int(seconds / 0.02)):
        if (await world.job(job_id)).status is status:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{job_id} never reached {status}: {await world.job(job_id)}")


async def test_graceful_shutdowns_that_hang_do_not_hold_the_slots_of_quick_jobs(
    world: World,
) -> None:
    """Four graceful shutdowns of VMs that ignore ACPI held all four workers for their whole
    timeout, so another tenant's 40 ms create waited 59 s."""
    shutdowns = []
    for i in range(4):
        vps = await world.add_vps(f"vm{i}", machine=VM)
        world.driver.set_power_state(vps.id, PowerState.RUNNING)
        job = await world.runtime.services.power.request(
            world.principal, vps.id, PowerAction.SHUTDOWN
        )
        assert job.lane is JobLane.SLOW
        shutdowns.append(job)
    bob = await _second_tenant(world)
    other = await world.add_vps("bobs", account_name="bob")
    world.driver.block("power")
    worker = world.runtime.worker()
    running = asyncio.create_task(worker.run())
    try:
        await world.driver.wait_blocked("power")
        create = await world.runtime.services.snapshots.create(
            bob, other.id, CreateSnapshot("quick")
        )
        assert create.lane is JobLane.QUICK
        await _wait_status(world, create.id, JobStatus.COMPLETED)
        statuses = [(await world.job(j.id)).status for j in shutdowns]
        # The slow lane has 2 slots and one account may hold only 1 of them.
        assert statuses.count(JobStatus.IN_PROGRESS) == 1
        world.driver.release("power")
        for job in shutdowns:
            await _wait_status(world, job.id, JobStatus.COMPLETED)
    finally:
        world.driver.release("power")
        worker.stop()
        await running


async def test_one_account_never_holds_every_quick_slot(world: World) -> None:
    mine = [await world.add_vps(f"mine{i}") for i in range(5)]
    bob = await _second_tenant(world)
    theirs = await world.add_vps("theirs", account_name="bob")
    world.driver.block("create")
    jobs = [
        await world.runtime.services.snapshots.create(world.principal, v.id, CreateSnapshot("a"))
        for v in mine
    ]
    worker = world.runtime.worker()
    running = asyncio.create_task(worker.run())
    try:
        await world.driver.wait_blocked("create")
        await asyncio.sleep(0.1)
        statuses = [(await world.job(j.id)).status for j in jobs]
        share = worker.account_share()[JobLane.QUICK]
        assert share == worker.concurrency - 1
        assert statuses.count(JobStatus.IN_PROGRESS) == share
        # The slot kept free serves the other tenant at once.
        bobs = await world.runtime.services.snapshots.create(bob, theirs.id, CreateSnapshot("b"))
        await _wait_status(world, bobs.id, JobStatus.IN_PROGRESS)
        world.driver.release("create")
        for job in [*jobs, bobs]:
            await _wait_status(world, job.id, JobStatus.COMPLETED)
    finally:
        world.driver.release("create")
        worker.stop()
        await running


async def test_a_vps_queue_is_bounded(world: World) -> None:
    vps = await world.add_vps(machine=VM)
    power = dataclasses.replace(world.runtime.services.power, max_jobs_per_vps=3)
    snapshots = dataclasses.replace(world.runtime.services.snapshots, max_jobs_per_vps=3)
    for _ in range(3):
        await power.request(world.principal, vps.id, PowerAction.START)
    with pytest.raises(VpsQueueFull) as caught:
        await power.request(world.principal, vps.id, PowerAction.START)
    assert caught.value.code == "vps_queue_full"
    assert caught.value.extensions["retryAfter"] > 0
    with pytest.raises(VpsQueueFull):
        await snapshots.create(world.principal, vps.id, CreateSnapshot("x"))
    # Nothing was recorded for the refused create: its name is free.
    assert await world.statuses(vps.id) == {}
    assert await world.run_all() == 3
    await snapshots.create(world.principal, vps.id, CreateSnapshot("x"))
