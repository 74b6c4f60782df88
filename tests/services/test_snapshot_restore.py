"""SnapshotService.restore and the snapshot.restore job: content rolls back, lineage, failures."""

from __future__ import annotations

import asyncio

import pytest

from vpsnap.domain.errors import (
    HypervisorError,
    SnapshotBusy,
    SnapshotNotFound,
    VpsNotReady,
)
from vpsnap.domain.model import JobStatus, JobType, PowerState, ServiceStatus
from vpsnap.services.snapshots import CreateSnapshot
from vpsnap.store.tables import vps as vps_table

from .conftest import World


async def _available(world: World, vps_id: str, *names: str) -> None:
    for name in names:
        await world.runtime.services.snapshots.create(world.principal, vps_id, CreateSnapshot(name))
        await world.run_all()


async def test_restore_rolls_the_content_back_and_keeps_newer_snapshots(world: World) -> None:
    vps = await world.add_vps()
    world.driver.write(vps.id, "v1")
    await _available(world, vps.id, "one")
    world.driver.write(vps.id, "v2")
    await _available(world, vps.id, "two")
    world.driver.write(vps.id, "v3-broken")

    job = await world.runtime.services.snapshots.restore(world.principal, vps.id, "one")
    assert job.type is JobType.SNAPSHOT_RESTORE
    assert job.status is JobStatus.QUEUED
    assert await world.statuses(vps.id) == {"one": "available", "two": "available"}
    assert await world.run_all() == 1

    done = await world.job(job.id)
    assert done.status is JobStatus.COMPLETED
    assert done.result == {
        "name": "one",
        "powerStateBefore": "stopped",
        "powerStateAfter": "stopped",
    }
    assert world.driver.content(vps.id) == "v1"
    assert await world.statuses(vps.id) == {"one": "available", "two": "available"}
    assert [p.name for p in await world.driver.list_restore_points(vps)] == ["one", "two"]
    assert (await world.listing(vps.id)).usage.used == 2


async def test_restored_snapshot_becomes_the_parent_of_the_next(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one", "two")

    await world.runtime.services.snapshots.restore(world.principal, vps.id, "one")
    await world.run_all()
    assert (await world.vps(vps.id)).current_snapshot == "one"
    await _available(world, vps.id, "three")

    parents = {s.name: s.parent_name for s in (await world.listing(vps.id)).snapshots}
    assert parents == {"one": None, "two": "one", "three": "one"}


async def test_snapshot_is_restoring_while_its_job_runs(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one")
    world.driver.block("restore")
    await world.runtime.services.snapshots.restore(world.principal, vps.id, "one")

    task = asyncio.create_task(world.runtime.worker().run_one())
    await world.driver.wait_blocked("restore")
    assert await world.statuses(vps.id) == {"one": "restoring"}
    assert (await world.listing(vps.id)).usage.used == 1
    world.driver.release("restore")
    assert await task is True
    assert await world.statuses(vps.id) == {"one": "available"}


async def test_failed_restore_puts_the_snapshot_back_to_available(world: World) -> None:
    vps = await world.add_vps()
    world.driver.write(vps.id, "v1")
    await _available(world, vps.id, "one")
    world.driver.write(vps.id, "v2")
    world.driver.fail_next("restore", HypervisorError("qemu-img snapshot -a failed"))

    job = await world.runtime.services.snapshots.restore(world.principal, vps.id, "one")
    await world.run_all()

    failed = await world.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == {
        "code": "hypervisor_unavailable",
        "title": "Hypervisor unavailable",
        "status": 503,
        "detail": "qemu-img snapshot -a failed",
    }
    assert await world.statuses(vps.id) == {"one": "available"}
    assert world.driver.content(vps.id) == "v2"
    assert (await world.vps(vps.id)).current_snapshot == "one"


async def test_restore_of_a_running_vm_fails_and_leaves_the_disk_alone(world: World) -> None:
    vps = await world.add_vps()
    world.driver.write(vps.id, "v1")
    await _available(world, vps.id, "one")
    world.driver.write(vps.id, "v2")
    world.driver.set_power_state(vps.id, PowerState.RUNNING)

    job = await world.runtime.services.snapshots.restore(world.principal, vps.id, "one")
    await world.run_all()

    failed = await world.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error["code"] == "vps_not_ready"
    assert await world.statuses(vps.id) == {"one": "available"}
    assert world.driver.content(vps.id) == "v2"


async def test_restore_of_an_unknown_snapshot_is_not_found(world: World) -> None:
    vps = await world.add_vps()
    with pytest.raises(SnapshotNotFound):
        await world.runtime.services.snapshots.restore(world.principal, vps.id, "nope")
    assert await world.run_all() == 0


async def test_restore_of_a_creating_snapshot_is_busy(world: World) -> None:
    vps = await world.add_vps()
    await world.runtime.services.snapshots.create(world.principal, vps.id, CreateSnapshot("one"))
    with pytest.raises(SnapshotBusy):
        await world.runtime.services.snapshots.restore(world.principal, vps.id, "one")


async def test_restore_of_a_deleting_snapshot_is_busy(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one")
    await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")
    with pytest.raises(SnapshotBusy):
        await world.runtime.services.snapshots.restore(world.principal, vps.id, "one")


async def test_restore_needs_an_active_service(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one")
    async with world.store.transaction() as tx:
        # Suspend the service (there is no use case for it; the operator edits the row).
        await tx.conn.execute(
            vps_table.update()
            .where(vps_table.c.id == vps.id)
            .values(service_status=ServiceStatus.SUSPENDED.value)
        )
    with pytest.raises(VpsNotReady):
        await world.runtime.services.snapshots.restore(world.principal, vps.id, "one")


@pytest.mark.parametrize("restore_state", ["queued", "in_progress"])
async def test_snapshot_deleted_while_a_restore_is_ahead_of_it_stays_deleting(
    world: World, restore_state: str
) -> None:
    """A delete accepted behind a restore of the same snapshot (its slot already given back,
    status ``deleting``) must not be undone by that restore: when the restore finishes the
    snapshot must still read ``deleting`` and hold no slot until its delete job runs.

    The restore's status changes are conditional (available → restoring → available), so they
    never overwrite ``deleting``.
    """
    vps = await world.add_vps()
    await _available(world, vps.id, "one")
    await world.runtime.services.snapshots.restore(world.principal, vps.id, "one")
    task: asyncio.Task[bool] | None = None
    if restore_state == "in_progress":
        world.driver.block("restore")
        task = asyncio.create_task(world.runtime.worker().run_one())
        await world.driver.wait_blocked("restore")
    delete = await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")
    assert delete.status is JobStatus.PENDING
    assert await world.statuses(vps.id) == {"one": "deleting"}

    if task is None:
        assert await world.runtime.worker().run_one() is True  # the restore
    else:
        world.driver.release("restore")
        assert await task is True

    assert await world.statuses(vps.id) == {"one": "deleting"}
    assert (await world.listing(vps.id)).usage.used == 0
