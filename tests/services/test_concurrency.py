"""Concurrent use cases on the real store (both backends): the VPS row lock keeps the slot
check and the insert atomic."""

from __future__ import annotations

import asyncio

from vpsnap.domain.errors import SnapshotLimitReached, SnapshotNameTaken
from vpsnap.domain.model import Job, JobStatus, SnapshotStatus
from vpsnap.services.snapshots import CreateSnapshot

from .conftest import World


async def test_twenty_concurrent_creates_fill_exactly_the_three_slots(world: World) -> None:
    vps = await world.add_vps(slots=3)
    snapshots = world.runtime.services.snapshots

    results = await asyncio.gather(
        *(
            snapshots.create(world.principal, vps.id, CreateSnapshot(f"snap-{i:02d}"))
            for i in range(20)
        ),
        return_exceptions=True,
    )

    accepted = [r for r in results if isinstance(r, Job)]
    refused = [r for r in results if isinstance(r, SnapshotLimitReached)]
    assert (len(accepted), len(refused)) == (3, 17), results
    assert all(e.extensions == {"totalSnapshots": 3, "usedSnapshots": 3} for e in refused)
    async with world.store.transaction(read_only=True) as tx:
        stored = await tx.list_snapshots(vps.id)
        creating = await tx.count_snapshots(SnapshotStatus.CREATING)
    assert sorted(s.name for s in stored) == sorted(j.snapshot_name or "" for j in accepted)
    assert creating == 3
    # One of the accepted jobs runs, the other two wait behind it.
    assert sorted(j.status for j in accepted) == sorted(
        [JobStatus.QUEUED, JobStatus.PENDING, JobStatus.PENDING]
    )
    assert await world.run_all() == 3
    assert (await world.listing(vps.id)).usage.used == 3


async def test_concurrent_creates_of_one_name_accept_exactly_one(world: World) -> None:
    vps = await world.add_vps(slots=10)
    snapshots = world.runtime.services.snapshots

    results = await asyncio.gather(
        *(
            snapshots.create(world.principal, vps.id, CreateSnapshot(name))
            for name in ["nightly", "NIGHTLY", "Nightly"] * 3
        ),
        return_exceptions=True,
    )

    assert sum(isinstance(r, Job) for r in results) == 1, results
    assert sum(isinstance(r, SnapshotNameTaken) for r in results) == 8, results
    assert len((await world.listing(vps.id)).snapshots) == 1


async def test_concurrent_creates_on_many_vpses_queue_one_head_each(world: World) -> None:
    vpses = [await world.add_vps(f"vps-{i}") for i in range(5)]
    snapshots = world.runtime.services.snapshots

    results = await asyncio.gather(
        *(
            snapshots.create(world.principal, vps.id, CreateSnapshot(f"s{n}"))
            for vps in vpses
            for n in range(3)
        )
    )

    for vps in vpses:
        statuses = sorted(j.status for j in results if j.vps_id == vps.id)
        assert statuses == sorted([JobStatus.QUEUED, JobStatus.PENDING, JobStatus.PENDING])
    assert await world.run_all() == 15
