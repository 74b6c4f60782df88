"""Snapshot schedules: ScheduleService (put/get/delete, clamping, the canEnable gate) and the
runs (run_due_schedules + the snapshot.scheduled job): names, rotation of scheduled snapshots
only, skips, the per-VPS queue, catch-up, failures and re-runs. Time is a ManualClock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.errors import (
    HypervisorError,
    InvalidRequest,
    SnapshotsNotIncluded,
    VpsNotFound,
)
from vpsnap.domain.model import JobStatus, JobType, ServiceStatus, SnapshotOrigin, SnapshotStatus
from vpsnap.domain.schedules import Schedule
from vpsnap.jobs.handlers import HANDLERS
from vpsnap.scheduler.reaper import requeue_orphans
from vpsnap.scheduler.retention import sweep_expired
from vpsnap.scheduler.schedules import run_due_schedules
from vpsnap.services.schedules import ScheduleService
from vpsnap.services.snapshots import CreateSnapshot

from .conftest import LEASE_SECONDS, World

T0 = datetime(2026, 4, 27, 12, 0, tzinfo=UTC)  # the ManualClock's start


def _service(world: World) -> ScheduleService:
    return ScheduleService(world.store, world.clock)


async def _run(world: World, limit: int = 100) -> list[str]:
    return await run_due_schedules(
        world.store, world.runtime.events, world.clock, retention=world.retention, limit=limit
    )


async def _schedule(world: World, vps_id: str) -> Schedule:
    async with world.store.transaction(read_only=True) as tx:
        schedule = await tx.get_schedule(vps_id)
    assert schedule is not None
    return schedule


async def _next_run(world: World, vps_id: str) -> datetime:
    next_run_at = (await _schedule(world, vps_id)).next_run_at
    assert next_run_at is not None
    return next_run_at


async def _enable(world: World, vps_id: str, hours: float = 4) -> None:
    await _service(world).put(world.principal, vps_id, enabled=True, interval_hours=hours)


async def _manual(world: World, vps_id: str, *names: str) -> None:
    for name in names:
        await world.runtime.services.snapshots.create(world.principal, vps_id, CreateSnapshot(name))
        await world.run_all()


async def _on_disk(world: World, vps_id: str) -> list[str]:
    return [p.name for p in await world.driver.list_restore_points(await world.vps(vps_id))]


async def _run_at_next(world: World, vps_id: str) -> str:
    """Move the clock to the schedule's next run, queue that run and run every job."""
    world.clock.moment = await _next_run(world, vps_id)
    [job_id] = await _run(world)
    await world.run_all()
    return job_id


# -- ScheduleService ------------------------------------------------------------------------------


async def test_get_without_a_schedule(world: World) -> None:
    vps = await world.add_vps(slots=3)

    view = await _service(world).get(world.principal, vps.id)

    assert view.schedule is None
    assert (view.usage.total, view.usage.used) == (3, 0)
    assert view.available is True
    assert view.reason is None
    assert view.can_enable.allowed is True
    assert view.can_enable.code is None


async def test_put_creates_an_enabled_schedule_that_get_returns(world: World) -> None:
    vps = await world.add_vps()

    view = await _service(world).put(world.principal, vps.id, enabled=True, interval_hours=6)

    assert view.schedule == Schedule(
        vps_id=vps.id,
        enabled=True,
        interval_hours=6,
        next_run_at=T0 + timedelta(hours=6),
        last_run_at=None,
        last_run_status=None,
        created_at=T0,
        updated_at=T0,
    )
    assert (await _service(world).get(world.principal, vps.id)).schedule == view.schedule


@pytest.mark.parametrize(
    ("asked", "kept"),
    [(3.7, 4), (30, 24), (6.9, 6), (4, 4), (24.99, 24), (0, 4), (-5, 4), (1e300, 24)],
)
async def test_the_interval_is_floored_and_clamped(world: World, asked: float, kept: int) -> None:
    vps = await world.add_vps()

    view = await _service(world).put(world.principal, vps.id, enabled=True, interval_hours=asked)

    assert view.schedule is not None
    assert view.schedule.interval_hours == kept
    assert view.schedule.next_run_at == T0 + timedelta(hours=kept)
    assert (await _schedule(world, vps.id)).interval_hours == kept


@pytest.mark.parametrize("asked", [float("inf"), float("-inf"), float("nan")])
async def test_a_non_finite_interval_is_invalid(world: World, asked: float) -> None:
    vps = await world.add_vps()

    with pytest.raises(InvalidRequest) as caught:
        await _service(world).put(world.principal, vps.id, enabled=True, interval_hours=asked)

    assert caught.value.errors[0].pointer == "/intervalHours"
    assert (await _service(world).get(world.principal, vps.id)).schedule is None


async def test_putting_the_same_settings_again_changes_nothing(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 6)
    world.clock.advance(hours=1)

    view = await _service(world).put(world.principal, vps.id, enabled=True, interval_hours=6.5)

    assert view.schedule is not None
    assert view.schedule.next_run_at == T0 + timedelta(hours=6)
    assert view.schedule.updated_at == T0
    assert await _schedule(world, vps.id) == view.schedule


async def test_changing_the_interval_reschedules_from_now(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 6)
    world.clock.advance(hours=1)

    await _service(world).put(world.principal, vps.id, enabled=True, interval_hours=8)

    schedule = await _schedule(world, vps.id)
    assert schedule.interval_hours == 8
    assert schedule.next_run_at == T0 + timedelta(hours=9)
    assert (schedule.created_at, schedule.updated_at) == (T0, T0 + timedelta(hours=1))


async def test_disabling_clears_the_next_run_and_enabling_starts_from_now(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 6)
    world.clock.advance(hours=2)

    await _service(world).put(world.principal, vps.id, enabled=False, interval_hours=6)
    disabled = await _schedule(world, vps.id)
    assert (disabled.enabled, disabled.next_run_at) == (False, None)

    world.clock.advance(hours=1)
    await _enable(world, vps.id, 6)
    enabled = await _schedule(world, vps.id)
    assert (enabled.enabled, enabled.next_run_at) == (True, T0 + timedelta(hours=9))


async def test_without_slots_a_schedule_cannot_be_enabled(world: World) -> None:
    vps = await world.add_vps(slots=0)
    service = _service(world)

    view = await service.get(world.principal, vps.id)
    assert view.available is False
    assert view.reason is not None
    assert "actions/upgrade" in view.reason
    assert view.can_enable.allowed is False
    assert view.can_enable.code == "snapshots_not_included"

    with pytest.raises(SnapshotsNotIncluded):
        await service.put(world.principal, vps.id, enabled=True, interval_hours=6)
    assert (await service.get(world.principal, vps.id)).schedule is None

    # Disabling asks for nothing the plan lacks.
    disabled = await service.put(world.principal, vps.id, enabled=False, interval_hours=6)
    assert disabled.schedule is not None
    assert disabled.schedule.enabled is False


async def test_can_enable_is_forbidden_without_write_vm(world: World) -> None:
    vps = await world.add_vps()
    reader = Principal(world.account.id, frozenset({Scope.READ_VM}))

    view = await _service(world).get(reader, vps.id)

    assert view.can_enable.allowed is False
    assert view.can_enable.code == "forbidden"


async def test_another_accounts_vps_does_not_exist(world: World, stranger: Principal) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 6)
    service = _service(world)

    with pytest.raises(VpsNotFound):
        await service.get(stranger, vps.id)
    with pytest.raises(VpsNotFound):
        await service.put(stranger, vps.id, enabled=False, interval_hours=4)
    with pytest.raises(VpsNotFound):
        await service.delete(stranger, vps.id)

    schedule = await _schedule(world, vps.id)
    assert (schedule.enabled, schedule.interval_hours) == (True, 6)


async def test_delete_removes_the_schedule_and_keeps_its_snapshots(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 4)
    await _run_at_next(world, vps.id)

    assert await _service(world).delete(world.principal, vps.id) is True

    assert (await _service(world).get(world.principal, vps.id)).schedule is None
    assert await world.statuses(vps.id) == {"auto-20260427-1600": "available"}
    assert await _service(world).delete(world.principal, vps.id) is False
    world.clock.advance(days=1)
    assert await _run(world) == []


# -- runs -----------------------------------------------------------------------------------------


async def test_a_due_run_takes_an_auto_snapshot(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 6)
    world.clock.advance(hours=5, minutes=59)
    assert await _run(world) == []

    world.clock.advance(minutes=1)
    [job_id] = await _run(world)

    job = await world.job(job_id)
    assert job.type is JobType.SNAPSHOT_SCHEDULED
    assert job.status is JobStatus.QUEUED
    assert job.snapshot_name == "auto-20260427-1800"
    # Like a manual create, the new snapshot holds its slot from the moment it is queued.
    assert await world.statuses(vps.id) == {"auto-20260427-1800": "creating"}

    assert await world.run_all() == 1

    done = await world.job(job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.result == {"name": "auto-20260427-1800", "replaced": None}
    snapshot = await world.snapshot(vps.id, "auto-20260427-1800")
    assert snapshot is not None
    assert snapshot.status is SnapshotStatus.AVAILABLE
    assert snapshot.origin is SnapshotOrigin.SCHEDULED
    assert snapshot.created_at == T0 + timedelta(hours=6)
    assert snapshot.expires_at == snapshot.created_at + world.retention
    assert await _on_disk(world, vps.id) == ["auto-20260427-1800"]
    schedule = await _schedule(world, vps.id)
    assert schedule.last_run_status == "ok"
    assert schedule.last_run_at == T0 + timedelta(hours=6)
    assert schedule.next_run_at == T0 + timedelta(hours=12)
    assert await _run(world) == []


async def test_a_late_run_is_named_for_its_minute_and_keeps_the_grid(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 4)
    world.clock.advance(hours=4, minutes=7, seconds=42)

    [job_id] = await _run(world)

    assert (await world.job(job_id)).snapshot_name == "auto-20260427-1607"
    assert (await _schedule(world, vps.id)).next_run_at == T0 + timedelta(hours=8)


async def test_rotation_deletes_the_oldest_scheduled_snapshot_never_a_manual_one(
    world: World,
) -> None:
    vps = await world.add_vps(slots=3)
    await _manual(world, vps.id, "manual-oldest")
    await _enable(world, vps.id, 4)
    await _run_at_next(world, vps.id)  # 16:00
    await _run_at_next(world, vps.id)  # 20:00: every slot is used now
    assert (await world.listing(vps.id)).usage.remaining == 0

    world.clock.moment = await _next_run(world, vps.id)
    [job_id] = await _run(world)

    # The oldest scheduled snapshot gives its slot to the new one; the older manual one stays.
    assert await world.statuses(vps.id) == {
        "manual-oldest": "available",
        "auto-20260427-1600": "deleting",
        "auto-20260427-2000": "available",
        "auto-20260428-0000": "creating",
    }
    assert (await world.listing(vps.id)).usage.used == 3
    assert (await world.job(job_id)).payload["replaces"] == "auto-20260427-1600"

    assert await world.run_all() == 1

    done = await world.job(job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.result == {"name": "auto-20260428-0000", "replaced": "auto-20260427-1600"}
    assert await world.statuses(vps.id) == {
        "manual-oldest": "available",
        "auto-20260427-2000": "available",
        "auto-20260428-0000": "available",
    }
    assert sorted(await _on_disk(world, vps.id)) == [
        "auto-20260427-2000",
        "auto-20260428-0000",
        "manual-oldest",
    ]
    # The new snapshot was taken first, so it was the current one's child.
    new = await world.snapshot(vps.id, "auto-20260428-0000")
    assert new is not None
    assert new.parent_name == "auto-20260427-2000"
    assert (await world.vps(vps.id)).current_snapshot == "auto-20260428-0000"
    assert (await _schedule(world, vps.id)).last_run_status == "ok"


async def test_a_run_is_skipped_when_only_manual_snapshots_fill_the_slots(world: World) -> None:
    vps = await world.add_vps(slots=2)
    await _manual(world, vps.id, "keep-1", "keep-2")
    await _enable(world, vps.id, 4)
    world.clock.advance(hours=4)

    assert await _run(world) == []

    schedule = await _schedule(world, vps.id)
    assert schedule.last_run_status == "skipped: all 2 slots hold manual snapshots"
    assert schedule.last_run_at == T0 + timedelta(hours=4)
    assert schedule.next_run_at == T0 + timedelta(hours=8)
    assert await world.statuses(vps.id) == {"keep-1": "available", "keep-2": "available"}
    assert await world.run_all() == 0
    assert sorted(await _on_disk(world, vps.id)) == ["keep-1", "keep-2"]


async def test_a_run_still_queued_is_never_replaced(world: World) -> None:
    vps = await world.add_vps(slots=2)
    await _manual(world, vps.id, "manual")
    await _enable(world, vps.id, 4)
    world.clock.advance(hours=4)
    [first] = await _run(world)  # queued, not run: its snapshot is still creating
    world.clock.advance(hours=4)

    assert await _run(world) == []

    status = (await _schedule(world, vps.id)).last_run_status
    assert status is not None
    assert status.startswith("skipped: all 2 slots are in use and no scheduled snapshot")
    assert await world.run_all() == 1
    assert (await world.job(first)).status is JobStatus.COMPLETED


async def test_a_run_waits_behind_the_vps_running_job(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 4)
    world.clock.advance(hours=4)
    manual = await world.runtime.services.snapshots.create(
        world.principal, vps.id, CreateSnapshot("manual")
    )
    world.driver.block("create")
    running = asyncio.create_task(world.runtime.worker().run_one())
    try:
        await world.driver.wait_blocked("create")
        [job_id] = await _run(world)
        assert (await world.job(job_id)).status is JobStatus.PENDING
    finally:
        world.driver.release("create")
        await running

    assert (await world.job(manual.id)).status is JobStatus.COMPLETED
    assert (await world.job(job_id)).status is JobStatus.QUEUED
    assert await world.run_all() == 1
    assert (await world.job(job_id)).status is JobStatus.COMPLETED
    assert await _on_disk(world, vps.id) == ["manual", "auto-20260427-1600"]


async def test_catch_up_after_two_days_of_downtime_runs_once(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 4)  # first run due at 16:00
    world.clock.advance(days=2)  # down until 12:00 two days later: 12 runs were missed

    assert len(await _run(world)) == 1
    assert await _run(world) == []

    # The grid is kept: the next run is the first grid time after now.
    assert (await _schedule(world, vps.id)).next_run_at == T0 + timedelta(hours=52)
    assert await world.run_all() == 1
    assert await world.statuses(vps.id) == {"auto-20260429-1200": "available"}
    world.clock.advance(hours=4)
    assert len(await _run(world)) == 1


async def test_every_due_schedule_runs_when_there_are_more_than_limit(world: World) -> None:
    vpses = [await world.add_vps(f"vps-{i}") for i in range(5)]
    for vps in vpses:
        await _enable(world, vps.id, 4)
    world.clock.advance(hours=4)

    job_ids = await _run(world, limit=2)

    assert len(job_ids) == 5
    assert {(await world.job(j)).vps_id for j in job_ids} == {v.id for v in vpses}
    assert await _run(world, limit=2) == []


async def test_disabled_schedules_do_not_run(world: World) -> None:
    never = await world.add_vps("never")
    paused = await world.add_vps("paused")
    await _service(world).put(world.principal, never.id, enabled=False, interval_hours=4)
    await _enable(world, paused.id, 4)
    await _service(world).put(world.principal, paused.id, enabled=False, interval_hours=4)
    world.clock.advance(days=1)

    assert await _run(world) == []
    assert await world.run_all() == 0
    assert (await _schedule(world, paused.id)).last_run_at is None


async def test_a_run_is_skipped_while_the_service_is_not_active(world: World) -> None:
    vps = await world.add_vps(status=ServiceStatus.SUSPENDED)
    await _enable(world, vps.id, 4)
    world.clock.advance(hours=4)

    assert await _run(world) == []

    schedule = await _schedule(world, vps.id)
    assert schedule.last_run_status == "skipped: The service of web is suspended, not active."
    assert schedule.next_run_at == T0 + timedelta(hours=8)
    assert await world.statuses(vps.id) == {}


async def test_a_run_is_skipped_while_more_snapshots_exist_than_slots(world: World) -> None:
    vps = await world.add_vps(slots=2)
    await _enable(world, vps.id, 4)
    await _run_at_next(world, vps.id)
    await _run_at_next(world, vps.id)
    async with world.store.transaction() as tx:
        await tx.set_snapshot_slots(vps.id, 1)  # the operator took a slot away
    world.clock.moment = await _next_run(world, vps.id)

    assert await _run(world) == []

    assert (await _schedule(world, vps.id)).last_run_status == (
        "skipped: 2 snapshots hold more than the 1 slots; delete some first"
    )
    assert await world.statuses(vps.id) == {
        "auto-20260427-1600": "available",
        "auto-20260427-2000": "available",
    }


async def test_a_run_is_skipped_when_its_name_is_taken(world: World) -> None:
    vps = await world.add_vps()
    await _manual(world, vps.id, "AUTO-20260427-1600")
    await _enable(world, vps.id, 4)
    world.clock.advance(hours=4)

    assert await _run(world) == []

    assert (await _schedule(world, vps.id)).last_run_status == (
        "skipped: a snapshot named auto-20260427-1600 already exists"
    )
    assert await world.statuses(vps.id) == {"AUTO-20260427-1600": "available"}


async def test_concurrent_schedulers_run_a_schedule_once(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 4)
    world.clock.advance(hours=4)

    results = await asyncio.gather(*(_run(world) for _ in range(4)))

    assert sum(len(r) for r in results) == 1
    assert await world.run_all() == 1
    assert await world.statuses(vps.id) == {"auto-20260427-1600": "available"}


async def test_a_failed_run_frees_its_slot_and_says_why(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 4)
    world.clock.advance(hours=4)
    [job_id] = await _run(world)
    world.driver.fail_next("create", HypervisorError("qemu-img crashed"))

    assert await world.run_all() == 1

    assert (await world.job(job_id)).status is JobStatus.FAILED
    assert await world.statuses(vps.id) == {}
    assert (await world.listing(vps.id)).usage.used == 0
    schedule = await _schedule(world, vps.id)
    assert schedule.last_run_status == "failed: qemu-img crashed"
    assert schedule.last_run_at == T0 + timedelta(hours=4)


async def test_a_failed_rotation_run_keeps_the_snapshot_it_would_replace(world: World) -> None:
    vps = await world.add_vps(slots=1)
    await _enable(world, vps.id, 4)
    await _run_at_next(world, vps.id)
    world.clock.moment = await _next_run(world, vps.id)
    [job_id] = await _run(world)
    world.driver.fail_next("create", HypervisorError("no space left on device"))

    assert await world.run_all() == 1

    assert (await world.job(job_id)).status is JobStatus.FAILED
    assert await world.statuses(vps.id) == {"auto-20260427-1600": "available"}
    assert await _on_disk(world, vps.id) == ["auto-20260427-1600"]
    assert (await _schedule(world, vps.id)).last_run_status == "failed: no space left on device"


async def test_when_the_old_snapshot_cannot_be_deleted_the_new_one_is_taken_back(
    world: World,
) -> None:
    vps = await world.add_vps(slots=1)
    await _enable(world, vps.id, 4)
    await _run_at_next(world, vps.id)
    world.clock.moment = await _next_run(world, vps.id)
    [job_id] = await _run(world)
    world.driver.fail_next("delete", HypervisorError("qemu-img crashed"))

    assert await world.run_all() == 1

    failed = await world.job(job_id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error["code"] == "hypervisor_unavailable"
    assert await world.statuses(vps.id) == {"auto-20260427-1600": "available"}
    assert await _on_disk(world, vps.id) == ["auto-20260427-1600"]
    assert (await world.listing(vps.id)).usage.used == 1
    assert (await _schedule(world, vps.id)).last_run_status == (
        "failed: Could not delete 'auto-20260427-1600' to make room: qemu-img crashed"
    )


async def test_a_rerun_after_a_worker_died_completes_the_rotation_once(world: World) -> None:
    vps = await world.add_vps(slots=1)
    await _enable(world, vps.id, 4)
    await _run_at_next(world, vps.id)
    world.clock.moment = await _next_run(world, vps.id)
    [job_id] = await _run(world)
    [claimed] = await world.claim("dead-worker")
    # The worker did all the hypervisor work, then died before recording it.
    await HANDLERS[claimed.type].perform(
        world.driver, claimed, vps, world.journal(claimed, "dead-worker")
    )
    world.clock.advance(seconds=LEASE_SECONDS + 1)
    await requeue_orphans(
        world.store, world.runtime.events, world.clock, "local", all_in_progress=False
    )
    world.driver.calls.clear()

    assert await world.run_all() == 1

    done = await world.job(job_id)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.attempts == 2
    # Everything was done already: the re-run only looked (the replaced one is gone).
    assert world.driver.changes() == []
    assert await world.statuses(vps.id) == {"auto-20260427-2000": "available"}
    assert await _on_disk(world, vps.id) == ["auto-20260427-2000"]


async def test_deleting_the_schedule_does_not_cancel_a_queued_run(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 4)
    world.clock.advance(hours=4)
    [job_id] = await _run(world)

    await _service(world).delete(world.principal, vps.id)
    assert await world.run_all() == 1

    assert (await world.job(job_id)).status is JobStatus.COMPLETED
    assert await world.statuses(vps.id) == {"auto-20260427-1600": "available"}
    assert (await _service(world).get(world.principal, vps.id)).schedule is None


async def test_scheduled_snapshots_expire_like_manual_ones(world: World) -> None:
    vps = await world.add_vps()
    await _enable(world, vps.id, 24)
    await _run_at_next(world, vps.id)
    await _service(world).put(world.principal, vps.id, enabled=False, interval_hours=24)
    world.clock.advance(hours=36, minutes=30)

    [job_id] = await sweep_expired(world.store, world.runtime.events, world.clock)

    assert (await world.job(job_id)).type is JobType.SNAPSHOT_EXPIRE
    assert await world.run_all() == 1
    assert await world.statuses(vps.id) == {}
