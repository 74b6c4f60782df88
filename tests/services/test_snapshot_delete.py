"""SnapshotService.delete and the snapshot.delete job: slot given back at once, busy states,
the VPS's current snapshot, and a failed delete."""

from __future__ import annotations

import pytest

from vpsnap.domain.errors import HypervisorError, SnapshotBusy, SnapshotNotFound
from vpsnap.domain.model import JobStatus, JobType, PowerState
from vpsnap.services.snapshots import CreateSnapshot

from .conftest import World


async def _available(world: World, vps_id: str, *names: str) -> None:
    for name in names:
        await world.runtime.services.snapshots.create(world.principal, vps_id, CreateSnapshot(name))
        await world.run_all()


async def test_delete_frees_the_slot_before_the_job_runs(world: World) -> None:
    vps = await world.add_vps(slots=2)
    await _available(world, vps.id, "one", "two")
    assert (await world.listing(vps.id)).usage.used == 2

    job = await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")

    assert job.type is JobType.SNAPSHOT_DELETE
    assert job.status is JobStatus.QUEUED
    assert job.snapshot_name == "one"
    listing = await world.listing(vps.id)
    assert await world.statuses(vps.id) == {"one": "deleting", "two": "available"}
    assert (listing.usage.used, listing.usage.remaining) == (1, 1)
    # The freed slot can be taken at once; the new create waits behind the delete.
    created = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("three")
    )
    assert created.status is JobStatus.PENDING


async def test_delete_job_removes_the_snapshot_everywhere(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one", "two")

    job = await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")
    assert await world.run_all() == 1

    done = await world.job(job.id)
    assert done.status is JobStatus.COMPLETED
    assert done.result == {"name": "one"}
    assert await world.statuses(vps.id) == {"two": "available"}
    assert [p.name for p in await world.driver.list_restore_points(vps)] == ["two"]
    assert (await world.listing(vps.id)).usage.used == 1


async def test_delete_matches_the_name_ignoring_case(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "Nightly")

    job = await world.runtime.services.snapshots.delete(world.principal, vps.id, "NIGHTLY")
    await world.run_all()

    assert job.snapshot_name == "Nightly"
    assert await world.statuses(vps.id) == {}
    assert await world.driver.list_restore_points(vps) == []


async def test_deleting_a_creating_snapshot_is_busy(world: World) -> None:
    vps = await world.add_vps()
    await world.runtime.services.snapshots.create(world.principal, vps.id, CreateSnapshot("one"))

    with pytest.raises(SnapshotBusy):
        await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")

    assert await world.statuses(vps.id) == {"one": "creating"}
    assert await world.run_all() == 1


async def test_deleting_twice_is_busy(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one")
    await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")

    with pytest.raises(SnapshotBusy):
        await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")

    assert await world.run_all() == 1


async def test_deleting_an_unknown_snapshot_is_not_found(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one")

    with pytest.raises(SnapshotNotFound) as caught:
        await world.runtime.services.snapshots.delete(world.principal, vps.id, "two")

    assert caught.value.detail == "web has no snapshot named 'two'."
    assert await world.run_all() == 0


async def test_deleting_the_current_snapshot_makes_its_parent_current(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one", "two")
    assert (await world.snapshot(vps.id, "two")).parent_name == "one"  # type: ignore[union-attr]

    await world.runtime.services.snapshots.delete(world.principal, vps.id, "two")
    await world.run_all()
    assert (await world.vps(vps.id)).current_snapshot == "one"
    await _available(world, vps.id, "three")

    three = await world.snapshot(vps.id, "three")
    assert three is not None
    assert three.parent_name == "one"


async def _parents(world: World, vps_id: str) -> dict[str, str | None]:
    return {s.name: s.parent_name for s in (await world.listing(vps_id)).snapshots}


async def test_a_deleted_parent_re_links_its_children_so_a_reused_name_is_no_parent(
    world: World,
) -> None:
    """Issue 9, kind 6: create alpha, 1, 2; delete 1; create a new 1. Snapshot 2 must not name
    the new, unrelated 1 as its parent: deleting 1 re-linked 2 to alpha (as Proxmox does)."""
    vps = await world.add_vps(slots=4)
    await _available(world, vps.id, "alpha", "1", "2")
    assert await _parents(world, vps.id) == {"alpha": None, "1": "alpha", "2": "1"}

    await world.runtime.services.snapshots.delete(world.principal, vps.id, "1")
    await world.run_all()
    await _available(world, vps.id, "1")

    parents = await _parents(world, vps.id)
    assert parents == {"alpha": None, "2": "alpha", "1": "2"}
    # A parent always exists and is older.
    listing = {s.name: s for s in (await world.listing(vps.id)).snapshots}
    for name, parent in parents.items():
        if parent is not None:
            assert listing[parent].created_at <= listing[name].created_at


@pytest.mark.parametrize("how", ["expiry", "rotation", "failed-row"])
async def test_every_way_a_snapshot_row_goes_re_links_its_children(world: World, how: str) -> None:
    """The same invariant for the other paths that remove a snapshot row: the retention sweep,
    a schedule's rotation and the delete of a row reconciliation marked failed (all go through
    the store's ``remove_snapshot``)."""
    from datetime import timedelta

    from vpsnap.domain.model import SnapshotOrigin, SnapshotStatus
    from vpsnap.scheduler.retention import sweep_expired

    vps = await world.add_vps(slots=3)
    await _available(world, vps.id, "a", "b", "c")
    if how == "expiry":
        async with world.store.transaction() as tx:
            b = await tx.get_snapshot(vps.id, "b")
            assert b is not None
            import dataclasses

            await tx.update_snapshot(
                dataclasses.replace(b, expires_at=world.clock.now() - timedelta(seconds=1))
            )
        await sweep_expired(world.store, world.runtime.events, world.clock)
    elif how == "rotation":
        async with world.store.transaction() as tx:
            b = await tx.get_snapshot(vps.id, "b")
            assert b is not None
            import dataclasses

            await tx.update_snapshot(
                dataclasses.replace(
                    b, origin=SnapshotOrigin.SCHEDULED, status=SnapshotStatus.DELETING
                )
            )
            await tx.remove_snapshot(vps.id, "b")
    else:
        async with world.store.transaction() as tx:
            await tx.set_snapshot_status(
                vps.id, "b", SnapshotStatus.FAILED, only_from=SnapshotStatus.AVAILABLE
            )
        await world.runtime.services.snapshots.delete(world.principal, vps.id, "b")
    await world.run_all()

    assert await _parents(world, vps.id) == {"a": None, "c": "a"}


async def test_deleting_an_older_snapshot_keeps_the_current_one_as_parent(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one", "two")

    await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")
    await world.run_all()
    await _available(world, vps.id, "three")

    three = await world.snapshot(vps.id, "three")
    assert three is not None
    assert three.parent_name == "two"
    assert (await world.vps(vps.id)).current_snapshot == "three"


async def test_failed_delete_puts_the_snapshot_back_to_available(world: World) -> None:
    vps = await world.add_vps(slots=2)
    await _available(world, vps.id, "one")
    world.driver.fail_next("delete", HypervisorError("qemu-img snapshot -d failed"))

    job = await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")
    await world.run_all()

    failed = await world.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == {
        "code": "hypervisor_unavailable",
        "title": "Hypervisor unavailable",
        "status": 503,
        "detail": "qemu-img snapshot -d failed",
    }
    assert failed.result is None
    assert await world.statuses(vps.id) == {"one": "available"}
    assert (await world.listing(vps.id)).usage.used == 1
    assert [p.name for p in await world.driver.list_restore_points(vps)] == ["one"]
    # And it can be deleted again.
    await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")
    await world.run_all()
    assert await world.statuses(vps.id) == {}


async def test_delete_refused_by_a_running_vm_fails_with_its_code(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one")
    world.driver.set_power_state(vps.id, PowerState.RUNNING)

    job = await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")
    await world.run_all()

    failed = await world.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert (failed.error["code"], failed.error["status"]) == ("vps_not_ready", 409)
    assert await world.statuses(vps.id) == {"one": "available"}


async def test_a_failed_delete_never_leaves_more_snapshots_than_slots(world: World) -> None:
    """The slot of a deleting snapshot is handed out at once; if that delete then fails, the
    snapshot comes back as ``available`` next to the one that took its slot.

    The queued create re-checks the slots when it runs and fails with snapshot_limit_reached,
    instead of leaving 2 snapshots on 1 slot.
    """
    vps = await world.add_vps(slots=1)
    await _available(world, vps.id, "one")
    world.driver.fail_next("delete", HypervisorError("qemu-img snapshot -d failed"))
    await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")
    create = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("two")
    )

    await world.run_all()

    usage = (await world.listing(vps.id)).usage
    assert usage.used <= usage.total, await world.statuses(vps.id)
    assert await world.statuses(vps.id) == {"one": "available"}
    failed = await world.job(create.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error["code"] == "snapshot_limit_reached"
    assert [p.name for p in await world.driver.list_restore_points(vps)] == ["one"]
