"""The retention sweep: expired snapshots are queued for deletion once, on the VPS's queue, and
the snapshot.expire job removes them from the hypervisor and the database. Time is a
ManualClock: nothing sleeps."""

from __future__ import annotations

import asyncio

from vpsnap.domain.audit import SCHEDULER, AuditAction, AuditFilter
from vpsnap.domain.errors import HypervisorError
from vpsnap.domain.model import JobStatus, JobType
from vpsnap.scheduler.retention import sweep_expired
from vpsnap.services.snapshots import CreateSnapshot

from .conftest import World


async def _sweep(world: World, limit: int = 100) -> list[str]:
    return await sweep_expired(world.store, world.runtime.events, world.clock, limit=limit)


async def _available(world: World, vps_id: str, *names: str) -> None:
    for name in names:
        await world.runtime.services.snapshots.create(world.principal, vps_id, CreateSnapshot(name))
        await world.run_all()


async def _on_disk(world: World, vps_id: str) -> list[str]:
    return [p.name for p in await world.driver.list_restore_points(await world.vps(vps_id))]


async def test_a_snapshot_is_swept_exactly_when_it_expires(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one")
    snapshot = await world.snapshot(vps.id, "one")
    assert snapshot is not None
    assert snapshot.expires_at == snapshot.created_at + world.retention

    world.clock.advance(hours=36, minutes=29, seconds=59)
    assert await _sweep(world) == []
    assert await world.statuses(vps.id) == {"one": "available"}

    world.clock.moment = snapshot.expires_at
    [job_id] = await _sweep(world)

    job = await world.job(job_id)
    assert job.type is JobType.SNAPSHOT_EXPIRE
    assert job.status is JobStatus.QUEUED
    assert job.snapshot_name == "one"
    assert job.vps_id == vps.id
    # deleting frees the slot before the job runs, as a manual delete does
    assert await world.statuses(vps.id) == {"one": "deleting"}
    assert (await world.listing(vps.id)).usage.used == 0


async def test_the_expire_job_deletes_from_the_hypervisor_and_the_database(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one", "two")
    world.clock.advance(hours=37)

    job_ids = await _sweep(world)
    assert len(job_ids) == 2
    assert await world.run_all() == 2

    for job_id in job_ids:
        done = await world.job(job_id)
        assert done.status is JobStatus.COMPLETED, done.error
    assert await world.statuses(vps.id) == {}
    assert await _on_disk(world, vps.id) == []
    # "two" was the current snapshot: expiring it leaves the next one without a parent
    assert (await world.vps(vps.id)).current_snapshot is None


async def test_catch_up_after_two_days_of_downtime_deletes_what_expired_once(
    world: World,
) -> None:
    vps = await world.add_vps(slots=5)
    await _available(world, vps.id, "old-1")
    world.clock.advance(hours=6)
    await _available(world, vps.id, "old-2")
    world.clock.advance(hours=6)
    await _available(world, vps.id, "old-3")
    # The server is down for two days; the last snapshot before the restart is recent.
    world.clock.advance(hours=48)
    await _available(world, vps.id, "fresh")

    job_ids = await _sweep(world)

    assert len(job_ids) == 3
    assert {(await world.job(j)).snapshot_name for j in job_ids} == {"old-1", "old-2", "old-3"}
    assert await _sweep(world) == []
    assert await world.run_all() == 3
    assert await world.statuses(vps.id) == {"fresh": "available"}
    assert await _on_disk(world, vps.id) == ["fresh"]
    assert await _sweep(world) == []


async def test_sweeping_twice_queues_one_job(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one")
    world.clock.advance(days=2)

    first = await _sweep(world)
    second = await _sweep(world)

    assert len(first) == 1
    assert second == []
    assert await world.run_all() == 1


async def test_concurrent_sweeps_queue_one_job_per_snapshot(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one", "two")
    world.clock.advance(days=2)

    results = await asyncio.gather(*(_sweep(world) for _ in range(4)))

    assert sum(len(r) for r in results) == 2
    assert await world.run_all() == 2
    assert await world.statuses(vps.id) == {}


async def test_a_creating_snapshot_is_swept_only_once_available(world: World) -> None:
    vps = await world.add_vps()
    await world.runtime.services.snapshots.create(world.principal, vps.id, CreateSnapshot("slow"))
    world.clock.advance(days=2)

    assert await _sweep(world) == []
    assert await world.statuses(vps.id) == {"slow": "creating"}

    assert await world.run_all() == 1
    assert await world.statuses(vps.id) == {"slow": "available"}
    [job_id] = await _sweep(world)
    assert (await world.job(job_id)).snapshot_name == "slow"


async def test_a_restoring_snapshot_is_swept_only_once_available(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one")
    await world.runtime.services.snapshots.restore(world.principal, vps.id, "one")
    world.clock.advance(days=2)
    world.driver.block("restore")
    running = asyncio.create_task(world.runtime.worker().run_one())
    try:
        await world.driver.wait_blocked("restore")
        assert await world.statuses(vps.id) == {"one": "restoring"}

        assert await _sweep(world) == []
    finally:
        world.driver.release("restore")
        await running
    assert await world.statuses(vps.id) == {"one": "available"}

    [job_id] = await _sweep(world)
    assert await world.run_all() == 1
    assert (await world.job(job_id)).status is JobStatus.COMPLETED
    assert await world.statuses(vps.id) == {}


async def test_the_expire_job_waits_behind_the_vps_running_job(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "old")
    world.clock.advance(days=2)
    create = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("new")
    )

    [job_id] = await _sweep(world)

    assert (await world.job(job_id)).status is JobStatus.PENDING
    world.driver.calls.clear()
    assert await world.run_all() == 2
    assert (await world.job(create.id)).status is JobStatus.COMPLETED
    assert (await world.job(job_id)).status is JobStatus.COMPLETED
    assert [op for op, _ in world.driver.changes()] == ["create", "delete"]
    assert await world.statuses(vps.id) == {"new": "available"}


async def test_a_failed_expiry_is_retried_by_the_next_sweep(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one")
    world.clock.advance(days=2)
    [first] = await _sweep(world)
    world.driver.fail_next("delete", HypervisorError("qemu-img failed"))

    assert await world.run_all() == 1

    failed = await world.job(first)
    assert failed.status is JobStatus.FAILED
    assert await world.statuses(vps.id) == {"one": "available"}
    assert await _on_disk(world, vps.id) == ["one"]
    [second] = await _sweep(world)
    assert second != first
    assert await world.run_all() == 1
    assert await world.statuses(vps.id) == {}
    assert await _on_disk(world, vps.id) == []


async def test_a_sweep_reads_in_batches_of_limit_and_takes_them_all(world: World) -> None:
    web = await world.add_vps("web")
    db = await world.add_vps("db")
    await _available(world, web.id, "a", "b", "c")
    await _available(world, db.id, "d", "e")
    world.clock.advance(days=2)

    job_ids = await _sweep(world, limit=2)

    assert len(job_ids) == 5
    assert await _sweep(world, limit=2) == []
    assert await world.run_all() == 5
    assert await world.statuses(web.id) == {}
    assert await world.statuses(db.id) == {}


async def test_a_snapshot_deleted_by_its_owner_is_not_swept(world: World) -> None:
    vps = await world.add_vps()
    await _available(world, vps.id, "one")
    await world.runtime.services.snapshots.delete(world.principal, vps.id, "one")
    world.clock.advance(days=2)

    assert await _sweep(world) == []
    assert await world.run_all() == 1
    assert await world.statuses(vps.id) == {}


# -- the set-based sweep (issue 15): batches of `limit`, one transaction each ------------------


async def _expired_fleet(world: World, vps_count: int, per_vps: int) -> dict[str, list[str]]:
    """``vps_count`` VPSes with ``per_vps`` available snapshots each, all expired; also one
    fresh snapshot on the first VPS that must not be swept."""
    names: dict[str, list[str]] = {}
    for v in range(vps_count):
        vps = await world.add_vps(f"vm-{v}", slots=per_vps + 1)
        names[vps.id] = [f"s{v}-{k}" for k in range(per_vps)]
        await _available(world, vps.id, *names[vps.id])
    world.clock.advance(days=2)
    await _available(world, next(iter(names)), "fresh")
    return names


async def _jobs_by_snapshot(world: World, names: dict[str, list[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with world.store.transaction(read_only=True) as tx:
        for vps_id, snapshot_names in names.items():
            for name in snapshot_names:
                counts[name] = len(
                    [
                        j
                        for j in await tx.jobs_for_snapshot(vps_id, name)
                        if j.type is JobType.SNAPSHOT_EXPIRE
                    ]
                )
    return counts


async def test_batches_queue_exactly_one_job_per_expired_snapshot(world: World) -> None:
    names = await _expired_fleet(world, vps_count=3, per_vps=3)

    # 9 expired snapshots in batches of 2: batches split VPSes and end mid-VPS.
    job_ids = await _sweep(world, limit=2)

    assert len(job_ids) == len(set(job_ids)) == 9
    assert set((await _jobs_by_snapshot(world, names)).values()) == {1}
    assert await _sweep(world, limit=2) == []
    first = next(iter(names))
    assert (await world.statuses(first))["fresh"] == "available"
    # Per VPS the first expiry is queued and the others wait behind it, in expiry order.
    for vps_id, snapshot_names in names.items():
        jobs = [await world.job(j) for j in job_ids]
        mine = [j for j in jobs if j.vps_id == vps_id]
        assert [j.snapshot_name for j in mine] == snapshot_names
        assert [j.status for j in mine] == [JobStatus.QUEUED] + [JobStatus.PENDING] * 2
    # Each one audited by the scheduler, with its job.
    async with world.store.transaction(read_only=True) as tx:
        events = await tx.list_audit_events(
            AuditFilter(action=AuditAction.SNAPSHOT_EXPIRE), None, 100
        )
    assert sorted(e.details["jobId"] for e in events) == sorted(job_ids)
    assert {e.actor for e in events} == {SCHEDULER}

    assert await world.run_all() == 9
    for vps_id in names:
        expected = {"fresh": "available"} if vps_id == first else {}
        assert await world.statuses(vps_id) == expected


async def test_a_batch_queues_behind_a_vps_running_job(world: World) -> None:
    names = await _expired_fleet(world, vps_count=2, per_vps=2)
    idle, busy = list(names)  # the first holds "fresh" too: its slots are full
    running = await world.runtime.services.snapshots.create(
        world.principal, busy, CreateSnapshot("new")
    )

    job_ids = await _sweep(world, limit=10)

    jobs = [await world.job(j) for j in job_ids]
    assert [j.status for j in jobs if j.vps_id == busy] == [JobStatus.PENDING] * 2
    assert [j.status for j in jobs if j.vps_id == idle] == [JobStatus.QUEUED, JobStatus.PENDING]
    assert (await world.job(running.id)).status is JobStatus.QUEUED
    assert await world.run_all() == 5


async def test_concurrent_batched_sweeps_never_queue_a_snapshot_twice(world: World) -> None:
    names = await _expired_fleet(world, vps_count=4, per_vps=3)

    results = await asyncio.gather(*(_sweep(world, limit=2) for _ in range(4)))

    job_ids = [j for r in results for j in r]
    assert len(job_ids) == len(set(job_ids)) == 12
    assert set((await _jobs_by_snapshot(world, names)).values()) == {1}
    # Whatever a sweep stopped early on (another had it), a later sweep finds nothing left.
    assert await _sweep(world, limit=2) == []
    assert await world.run_all() == 12


async def test_protected_snapshots_are_skipped_by_a_batch(world: World) -> None:
    """Snapshots not available (being created or restored) or not yet expired stay; the rest
    of their batch is queued."""
    web = await world.add_vps("web", slots=4)
    await _available(world, web.id, "old", "restored")
    await world.runtime.services.snapshots.restore(world.principal, web.id, "restored")
    await world.runtime.services.snapshots.create(world.principal, web.id, CreateSnapshot("new"))
    world.clock.advance(days=2)
    world.driver.block("restore")
    running = asyncio.create_task(world.runtime.worker().run_one())
    try:
        await world.driver.wait_blocked("restore")
        [job_id] = await _sweep(world, limit=10)
        assert (await world.job(job_id)).snapshot_name == "old"
        assert await world.statuses(web.id) == {
            "old": "deleting",
            "restored": "restoring",
            "new": "creating",
        }
    finally:
        world.driver.release("restore")
        await running
