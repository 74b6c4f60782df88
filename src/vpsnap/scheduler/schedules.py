"""Schedule runs: queue a ``snapshot.scheduled`` job for every schedule that is due.

Each run is decided the way a manual create is accepted (contract 6.2): in one transaction
under the VPS row lock, the slot check, the ``creating`` row of the new snapshot and the job
are written together, so scheduled and manual snapshots can never exceed the slots between
them. When every slot is used, the oldest available *scheduled* snapshot is chosen to make
room: it turns ``deleting`` now (freeing its slot, like a manual delete) and the job deletes it
from the disks once the new snapshot exists (``jobs.handlers.scheduled``). The decision travels
in the job's payload, because a job handler cannot pass anything from ``prepare`` to
``perform``.

A run that cannot happen (service not active, no slots, no room without deleting a manual
snapshot, name already taken) queues nothing and records why in ``last_run_status``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import structlog

from vpsnap.domain.audit import SCHEDULER, AuditAction, AuditOutcome, Target
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import InsufficientStorage
from vpsnap.domain.job_types import SnapshotPayload
from vpsnap.domain.model import (
    Consistency,
    JobType,
    Snapshot,
    SnapshotOrigin,
    SnapshotStatus,
    Vps,
)
from vpsnap.domain.ports import JobEvents, Store, Transaction
from vpsnap.domain.queue import enqueue
from vpsnap.domain.rules import SlotUsage, name_key, service_gate, slot_usage
from vpsnap.domain.schedules import rotation_victim, scheduled_name
from vpsnap.domain.storage import SpaceGuard, space_refusal
from vpsnap.events.audit import record
from vpsnap.jobs.handlers.scheduled import run_status
from vpsnap.scheduler.retention import mark_deleting
from vpsnap.services.storage import published_stores

log = structlog.get_logger("vpsnap.schedules")

SCHEDULED_DESCRIPTION = "Scheduled snapshot"


def advance(next_run_at: datetime, interval_hours: int, now: datetime) -> datetime:
    """The first run time after ``now`` on the schedule's grid (``next_run_at`` + whole
    intervals): a server that was down for days runs one catch-up, not one per missed run."""
    interval = timedelta(hours=interval_hours)
    if next_run_at > now:
        return next_run_at
    missed = (now - next_run_at) // interval + 1
    return next_run_at + missed * interval


async def run_due_schedules(
    store: Store,
    events: JobEvents,
    clock: Clock,
    *,
    retention: timedelta,
    limit: int = 100,
    space: SpaceGuard | None = None,
) -> list[str]:
    """Run every due schedule, reading them ``limit`` at a time; returns the ids of the jobs
    queued (skipped runs queue none). Scheduled snapshots expire ``retention`` after they are
    taken, as manual ones do. A run that would leave the VPS's data store below ``space``'s
    floor is skipped (``insufficient_storage``)."""
    space = space or SpaceGuard()
    now = clock.now()
    job_ids: list[str] = []
    seen: set[str] = set()
    while True:
        async with store.transaction(read_only=True) as tx:
            batch = [s.vps_id for s in await tx.due_schedules(now, limit)]
        fresh = [vps_id for vps_id in batch if vps_id not in seen]
        seen.update(fresh)
        for vps_id in fresh:
            async with store.transaction() as tx:
                job_id = await _run(tx, clock, vps_id, now, retention, space)
            if job_id is not None:
                job_ids.append(job_id)
        # A run moves next_run_at past now (or finds the schedule changed), so each one
        # leaves the due set; a batch of nothing new means nothing more is due.
        if len(batch) < limit or not fresh:
            break
    if job_ids:
        events.jobs_queued()
    return job_ids


async def _run(  # noqa: PLR0917 - one call site, read with the caller
    tx: Transaction,
    clock: Clock,
    vps_id: str,
    now: datetime,
    retention: timedelta,
    space: SpaceGuard,
) -> str | None:
    vps = await tx.get_vps(vps_id, lock=True)
    # Re-read under the lock: another scheduler (or a PUT) may have run or changed it since
    # the scan, and a run must happen once.
    schedule = await tx.get_schedule(vps_id)
    if (
        vps is None
        or schedule is None
        or not schedule.enabled
        or schedule.next_run_at is None
        or schedule.next_run_at > now
    ):
        return None
    advanced = dataclasses.replace(
        schedule, next_run_at=advance(schedule.next_run_at, schedule.interval_hours, now)
    )
    name = scheduled_name(now)
    snapshots = await tx.list_snapshots(vps.id)
    skipped = _skip_reason(vps, snapshots, name)
    problem_code = None
    if skipped is None:
        no_space = space_refusal(
            vps, await published_stores(tx, vps), space, include_memory_state=False, now=now
        )
        if no_space is not None:
            skipped, problem_code = f"skipped: {no_space}", InsufficientStorage.code
    victim: Snapshot | None = None
    if skipped is None and slot_usage(vps, snapshots).used >= vps.snapshot_slots:
        victim = rotation_victim(snapshots)
        assert victim is not None  # _skip_reason skips when there is none
        # The conditional move loses only to a restore of that snapshot claimed this instant.
        if not await mark_deleting(tx, vps.id, victim.name):
            skipped = f"skipped: {victim.name}, the snapshot to replace, is being restored"
    if skipped is not None:
        await tx.save_schedule(
            dataclasses.replace(advanced, last_run_at=now, last_run_status=run_status(skipped))
        )
        log.info("schedule_run_skipped", vps_id=vps.id, reason=skipped)
        await record(
            tx,
            now,
            SCHEDULER,
            AuditAction.SNAPSHOT_SCHEDULED,
            account_id=vps.account_id,
            target=Target("snapshot", name),
            vps_id=vps.id,
            outcome=AuditOutcome.FAILED,
            problem_code=problem_code,
            details={"reason": skipped},
        )
        return None
    replaces = victim.name if victim is not None else None

    await tx.add_snapshot(
        Snapshot(
            vps_id=vps.id,
            name=name,
            description=SCHEDULED_DESCRIPTION,
            status=SnapshotStatus.CREATING,
            origin=SnapshotOrigin.SCHEDULED,
            consistency=Consistency.CRASH,
            includes_memory_state=False,
            parent_name=None,
            created_at=now,
            expires_at=now + retention,
        )
    )
    job = await enqueue(
        tx,
        clock,
        vps,
        JobType.SNAPSHOT_SCHEDULED,
        snapshot_name=name,
        payload=SnapshotPayload(include_memory_state=False, quiesce=True, replaces=replaces),
        created_by=SCHEDULER,
    )
    await record(
        tx,
        now,
        SCHEDULER,
        AuditAction.SNAPSHOT_SCHEDULED,
        account_id=vps.account_id,
        target=Target("snapshot", name),
        vps_id=vps.id,
        details={"jobId": job.id, "replaces": replaces},
    )
    await tx.save_schedule(advanced)
    log.info("schedule_run_queued", vps_id=vps.id, snapshot=name, replaces=replaces, job_id=job.id)
    return job.id


def _skip_reason(vps: Vps, snapshots: list[Snapshot], name: str) -> str | None:
    gate = service_gate(vps)
    if not gate.allowed:
        return f"skipped: {gate.reason}"
    if any(name_key(s.name) == name_key(name) for s in snapshots):
        return f"skipped: a snapshot named {name} already exists"
    return _no_room_reason(slot_usage(vps, snapshots), snapshots)


def _no_room_reason(usage: SlotUsage, snapshots: list[Snapshot]) -> str | None:
    if usage.total == 0:
        return "skipped: snapshots are not included in the plan (0 slots)"
    if usage.used > usage.total:
        # Slots were taken away below what is in use: replacing one would not make room.
        return (
            f"skipped: {usage.used} snapshots hold more than the {usage.total} slots; "
            "delete some first"
        )
    if usage.used == usage.total and rotation_victim(snapshots) is None:
        if all(s.origin is SnapshotOrigin.MANUAL for s in snapshots if s.holds_slot):
            return f"skipped: all {usage.total} slots hold manual snapshots"
        return (
            f"skipped: all {usage.total} slots are in use and no scheduled snapshot is "
            "available to replace (the others are still being created or restored)"
        )
    return None
