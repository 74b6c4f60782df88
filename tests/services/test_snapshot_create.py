"""SnapshotService.create: listing states, retention, slot accounting and the refusals."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import (
    SnapshotLimitReached,
    SnapshotNameTaken,
    SnapshotsNotIncluded,
    VpsNotFound,
    VpsNotReady,
)
from vpsnap.domain.model import (
    Consistency,
    JobStatus,
    JobType,
    ServiceStatus,
    Snapshot,
    SnapshotOrigin,
    SnapshotStatus,
)
from vpsnap.domain.ports import NOT_RUNNING_REASON, RestorePoint
from vpsnap.services.snapshots import CreateSnapshot

from .conftest import DISKS, World


async def test_create_shows_creating_then_available_after_the_job(world: World) -> None:
    vps = await world.add_vps()
    created_at = world.clock.now()

    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("before-upgrade", description="pre")
    )

    assert job.type is JobType.SNAPSHOT_CREATE
    assert job.status is JobStatus.QUEUED
    assert job.snapshot_name == "before-upgrade"
    assert job.payload == {"includeMemoryState": False, "quiesce": True}
    creating = Snapshot(
        vps_id=vps.id,
        name="before-upgrade",
        description="pre",
        status=SnapshotStatus.CREATING,
        origin=SnapshotOrigin.MANUAL,
        consistency=Consistency.CRASH,
        includes_memory_state=False,
        parent_name=None,
        created_at=created_at,
        expires_at=created_at + world.retention,
    )
    assert (await world.listing(vps.id)).snapshots == [creating]

    world.clock.advance(seconds=7)
    assert await world.runtime.worker().run_one() is True

    listing = await world.listing(vps.id)
    # The job does not move the timestamps: createdAt is when it was asked for. It records the
    # hypervisor's own creation date, the proof that the snapshot on disk is vpsnap's. A
    # stopped VM: no RAM, no agent, and the snapshot says so.
    assert listing.snapshots == [
        dataclasses.replace(
            creating,
            status=SnapshotStatus.AVAILABLE,
            disk_created_at=world.clock.now(),
            consistency_reason=NOT_RUNNING_REASON,
        )
    ]
    done = await world.job(job.id)
    assert done.status is JobStatus.COMPLETED
    assert done.result == {"name": "before-upgrade"}
    assert done.progress == 100
    assert done.attempts == 1
    assert done.error is None
    assert done.started_at == done.finished_at == created_at + timedelta(seconds=7)
    assert (await world.vps(vps.id)).current_snapshot == "before-upgrade"
    assert await world.driver.list_restore_points(vps) == [
        RestorePoint("before-upgrade", DISKS, 0, world.clock.now())
    ]


async def test_expiry_is_creation_time_plus_configured_retention(world: World) -> None:
    vps = await world.add_vps()
    world.clock.advance(hours=5, seconds=3)
    await world.runtime.services.snapshots.create(world.principal, vps.id, CreateSnapshot("s1"))

    [snapshot] = (await world.listing(vps.id)).snapshots
    assert snapshot.created_at == world.clock.now()
    assert snapshot.expires_at - snapshot.created_at == world.retention
    assert world.retention.total_seconds() == 36.5 * 3600


async def test_slot_usage_counts_creating_and_available_snapshots(world: World) -> None:
    vps = await world.add_vps(slots=3)
    snapshots = world.runtime.services.snapshots
    listing = await world.listing(vps.id)
    assert (listing.usage.total, listing.usage.used, listing.usage.remaining) == (3, 0, 3)
    assert listing.available is True
    assert listing.reason is None
    assert listing.can_create.allowed is True
    assert listing.can_restore.allowed is False
    assert listing.can_restore.code == "snapshot_not_found"

    await snapshots.create(world.principal, vps.id, CreateSnapshot("one"))
    await world.run_all()
    await snapshots.create(world.principal, vps.id, CreateSnapshot("two"))

    listing = await world.listing(vps.id)
    assert await world.statuses(vps.id) == {"one": "available", "two": "creating"}
    assert (listing.usage.used, listing.usage.remaining) == (2, 1)
    assert listing.can_restore.allowed is True

    await snapshots.create(world.principal, vps.id, CreateSnapshot("three"))
    listing = await world.listing(vps.id)
    assert (listing.usage.used, listing.usage.remaining) == (3, 0)
    assert listing.can_create.allowed is False
    assert listing.can_create.code == "snapshot_limit_reached"


async def test_create_beyond_the_slots_is_refused_with_the_totals(world: World) -> None:
    vps = await world.add_vps(slots=2)
    snapshots = world.runtime.services.snapshots
    await snapshots.create(world.principal, vps.id, CreateSnapshot("one"))
    await snapshots.create(world.principal, vps.id, CreateSnapshot("two"))

    with pytest.raises(SnapshotLimitReached) as caught:
        await snapshots.create(world.principal, vps.id, CreateSnapshot("three"))

    assert caught.value.code == "snapshot_limit_reached"
    assert caught.value.extensions == {"totalSnapshots": 2, "usedSnapshots": 2}
    assert f"/api/v2/vps/{vps.id}/actions/config" in caught.value.detail
    assert await world.statuses(vps.id) == {"one": "creating", "two": "creating"}


async def test_refused_create_queues_no_job(world: World) -> None:
    vps = await world.add_vps(slots=1)
    snapshots = world.runtime.services.snapshots
    await snapshots.create(world.principal, vps.id, CreateSnapshot("one"))
    with pytest.raises(SnapshotLimitReached):
        await snapshots.create(world.principal, vps.id, CreateSnapshot("two"))

    assert await world.run_all() == 1
    assert await world.statuses(vps.id) == {"one": "available"}


async def test_vps_without_slots_says_snapshots_are_not_included(world: World) -> None:
    vps = await world.add_vps(slots=0)

    with pytest.raises(SnapshotsNotIncluded) as caught:
        await world.runtime.services.snapshots.create(
            world.principal, vps.id, CreateSnapshot("one")
        )

    assert f"GET /api/v2/vps/{vps.id}/actions/upgrade" in caught.value.detail
    listing = await world.listing(vps.id)
    assert listing.available is False
    assert listing.reason == caught.value.detail
    assert listing.can_create.code == "snapshots_not_included"
    assert listing.snapshots == []


@pytest.mark.parametrize("taken_as", ["Nightly", "NIGHTLY", "nightly"])
async def test_snapshot_names_are_unique_ignoring_case(world: World, taken_as: str) -> None:
    vps = await world.add_vps()
    snapshots = world.runtime.services.snapshots
    await snapshots.create(world.principal, vps.id, CreateSnapshot("Nightly"))

    with pytest.raises(SnapshotNameTaken):
        await snapshots.create(world.principal, vps.id, CreateSnapshot(taken_as))

    [snapshot] = (await world.listing(vps.id)).snapshots
    assert snapshot.name == "Nightly"


async def test_the_same_name_is_free_on_another_vps(world: World) -> None:
    web = await world.add_vps("web")
    db = await world.add_vps("db")
    snapshots = world.runtime.services.snapshots
    await snapshots.create(world.principal, web.id, CreateSnapshot("nightly"))
    await snapshots.create(world.principal, db.id, CreateSnapshot("NIGHTLY"))

    assert await world.statuses(web.id) == {"nightly": "creating"}
    assert await world.statuses(db.id) == {"NIGHTLY": "creating"}


@pytest.mark.parametrize(
    "status",
    [s for s in ServiceStatus if s is not ServiceStatus.ACTIVE],
)
async def test_create_needs_an_active_service(world: World, status: ServiceStatus) -> None:
    vps = await world.add_vps(status=status)

    with pytest.raises(VpsNotReady) as caught:
        await world.runtime.services.snapshots.create(
            world.principal, vps.id, CreateSnapshot("one")
        )

    assert caught.value.detail == f"The service of web is {status.value}, not active."
    assert (await world.listing(vps.id)).can_create.code == "vps_not_ready"


async def test_service_gate_comes_before_the_slot_check(world: World) -> None:
    vps = await world.add_vps(slots=0, status=ServiceStatus.SUSPENDED)
    with pytest.raises(VpsNotReady):
        await world.runtime.services.snapshots.create(
            world.principal, vps.id, CreateSnapshot("one")
        )


async def test_another_accounts_vps_is_not_found_like_a_missing_one(
    world: World, stranger: Principal
) -> None:
    vps = await world.add_vps()
    missing_id = "vps_01hxa3b4c5d6e7f8g9h0j1k2m3"
    snapshots = world.runtime.services.snapshots
    await snapshots.create(world.principal, vps.id, CreateSnapshot("mine"))
    await world.run_all()

    with pytest.raises(VpsNotFound) as theirs:
        await snapshots.create(stranger, vps.id, CreateSnapshot("one"))
    with pytest.raises(VpsNotFound) as unknown:
        await snapshots.create(stranger, missing_id, CreateSnapshot("one"))

    assert theirs.value.detail == f"No VPS with id {vps.id!r} in this account."
    assert unknown.value.detail == f"No VPS with id {missing_id!r} in this account."
    assert theirs.value.extensions == unknown.value.extensions == {}
    with pytest.raises(VpsNotFound):
        await snapshots.listing(stranger, vps.id)
    with pytest.raises(VpsNotFound):
        await snapshots.delete(stranger, vps.id, "mine")
    with pytest.raises(VpsNotFound):
        await snapshots.restore(stranger, vps.id, "mine")
    # Nothing was created, changed or queued on the owner's VPS.
    assert await world.statuses(vps.id) == {"mine": "available"}
    assert await world.run_all() == 0
