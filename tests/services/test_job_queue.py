"""The per-VPS job queue: FIFO order, promotion after success and failure, failed creates."""

from __future__ import annotations

from vpsnap.domain.errors import HypervisorError, SnapshotNameTaken
from vpsnap.domain.model import JobStatus, Vps
from vpsnap.domain.ports import SnapshotRequest, TakenSnapshot
from vpsnap.drivers.fake import FakeDriver
from vpsnap.services.snapshots import CreateSnapshot

from .conftest import World


async def _statuses(world: World, *job_ids: str) -> list[str]:
    return [(await world.job(job_id)).status.value for job_id in job_ids]


async def test_jobs_of_one_vps_wait_as_pending_behind_the_first(world: World) -> None:
    vps = await world.add_vps(slots=5)
    snapshots = world.runtime.services.snapshots
    jobs = [
        await snapshots.create(world.principal, vps.id, CreateSnapshot(name))
        for name in ("a", "b", "c")
    ]
    ids = [j.id for j in jobs]
    assert [j.status for j in jobs] == [JobStatus.QUEUED, JobStatus.PENDING, JobStatus.PENDING]
    assert await _statuses(world, *ids) == ["queued", "pending", "pending"]

    worker = world.runtime.worker()
    assert await worker.run_one() is True
    assert await _statuses(world, *ids) == ["completed", "queued", "pending"]
    assert await worker.run_one() is True
    assert await _statuses(world, *ids) == ["completed", "completed", "queued"]
    assert await worker.run_one() is True
    assert await _statuses(world, *ids) == ["completed", "completed", "completed"]
    assert await worker.run_one() is False


async def test_pending_jobs_are_promoted_in_arrival_order_across_types(world: World) -> None:
    vps = await world.add_vps(slots=5)
    snapshots = world.runtime.services.snapshots
    await snapshots.create(world.principal, vps.id, CreateSnapshot("root"))
    await snapshots.create(world.principal, vps.id, CreateSnapshot("base"))
    await world.run_all()
    world.driver.calls.clear()

    first = await snapshots.create(world.principal, vps.id, CreateSnapshot("x"))
    second = await snapshots.restore(world.principal, vps.id, "base")
    third = await snapshots.create(world.principal, vps.id, CreateSnapshot("y"))
    fourth = await snapshots.delete(world.principal, vps.id, "base")
    assert [j.status for j in (first, second, third, fourth)] == [
        JobStatus.QUEUED,
        JobStatus.PENDING,
        JobStatus.PENDING,
        JobStatus.PENDING,
    ]

    assert await world.run_all() == 4

    assert world.driver.changes() == [
        ("create", vps.id),
        ("restore", vps.id),
        ("create", vps.id),
        ("delete", vps.id),
    ]
    # The lineage follows the order too: y was taken right after the restore of base (else
    # its parent would be x), and the delete of base re-linked both children to its parent.
    parents = {s.name: s.parent_name for s in (await world.listing(vps.id)).snapshots}
    assert parents == {"root": None, "x": "root", "y": "root"}


async def test_jobs_of_different_vpses_are_queued_side_by_side(world: World) -> None:
    web = await world.add_vps("web")
    db = await world.add_vps("db")
    snapshots = world.runtime.services.snapshots

    web_first = await snapshots.create(world.principal, web.id, CreateSnapshot("a"))
    web_second = await snapshots.create(world.principal, web.id, CreateSnapshot("b"))
    db_first = await snapshots.create(world.principal, db.id, CreateSnapshot("a"))

    assert (web_first.status, web_second.status, db_first.status) == (
        JobStatus.QUEUED,
        JobStatus.PENDING,
        JobStatus.QUEUED,
    )


async def test_a_claim_takes_only_the_head_job_of_each_vps(world: World) -> None:
    web = await world.add_vps("web")
    db = await world.add_vps("db")
    snapshots = world.runtime.services.snapshots
    heads = set()
    for vps in (web, db):
        heads.add((await snapshots.create(world.principal, vps.id, CreateSnapshot("a"))).id)
        await snapshots.create(world.principal, vps.id, CreateSnapshot("b"))
        await snapshots.create(world.principal, vps.id, CreateSnapshot("c"))

    claimed = await world.claim("w", limit=10)

    assert {j.id for j in claimed} == heads
    assert all(j.status is JobStatus.IN_PROGRESS and j.lease_owner == "w" for j in claimed)


async def test_failed_create_reports_the_problem_and_gives_the_slot_back(world: World) -> None:
    vps = await world.add_vps(slots=1)
    world.driver.fail_next("create", HypervisorError("qemu-img: Could not open '/fake/a.qcow2'"))
    snapshots = world.runtime.services.snapshots

    job = await snapshots.create(world.principal, vps.id, CreateSnapshot("one"))
    assert (await world.listing(vps.id)).usage.used == 1
    assert await world.run_all() == 1

    failed = await world.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == {
        "code": "hypervisor_unavailable",
        "title": "Hypervisor unavailable",
        "status": 503,
        # A host path that reached a detail is masked at the problem boundary (docs/api.md).
        "detail": "qemu-img: Could not open '[host detail]'",
    }
    assert failed.result is None
    assert failed.finished_at == world.clock.now()
    assert (failed.lease_owner, failed.lease_expires_at) == (None, None)
    listing = await world.listing(vps.id)
    assert listing.snapshots == []
    assert (listing.usage.used, listing.usage.remaining) == (0, 1)
    assert await world.driver.list_restore_points(vps) == []
    assert (await world.vps(vps.id)).current_snapshot is None
    # The name and the slot are free again.
    retry = await snapshots.create(world.principal, vps.id, CreateSnapshot("one"))
    await world.run_all()
    assert (await world.job(retry.id)).status is JobStatus.COMPLETED


async def test_a_failed_job_promotes_the_next_one(world: World) -> None:
    vps = await world.add_vps()
    world.driver.fail_next("create", HypervisorError("boom"))
    snapshots = world.runtime.services.snapshots
    first = await snapshots.create(world.principal, vps.id, CreateSnapshot("a"))
    second = await snapshots.create(world.principal, vps.id, CreateSnapshot("b"))

    assert await world.runtime.worker().run_one() is True

    assert await _statuses(world, first.id, second.id) == ["failed", "queued"]
    await world.run_all()
    assert await world.statuses(vps.id) == {"b": "available"}


async def test_a_name_already_on_disk_fails_the_create_and_leaves_that_snapshot(
    world: World,
) -> None:
    vps = await world.add_vps()
    # A snapshot vpsnap did not make is on the disk already.
    await world.driver.create_snapshot(vps, SnapshotRequest("manual"))

    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("MANUAL")
    )
    await world.run_all()

    failed = await world.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error["code"] == SnapshotNameTaken.code
    assert await world.statuses(vps.id) == {}
    assert [p.name for p in await world.driver.list_restore_points(vps)] == ["manual"]


class _CrashingDriver(FakeDriver):
    async def create_snapshot(self, vps: Vps, request: SnapshotRequest) -> TakenSnapshot:
        raise RuntimeError("a bug in the driver")


async def test_an_unexpected_exception_fails_the_job_as_an_internal_error(
    world: World,
) -> None:
    vps = await world.add_vps()
    job = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("one")
    )

    assert await world.worker(driver=_CrashingDriver(world.clock)).run_one() is True

    failed = await world.job(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == {
        "code": "internal_error",
        "title": "Internal error",
        "status": 500,
        "detail": "The job failed unexpectedly: RuntimeError.",
    }
    assert await world.statuses(vps.id) == {}
