"""The retention sweep: snapshots past their ``expires_at`` are queued for deletion, once each.

A sweep marks every expired ``available`` snapshot ``deleting`` and queues a ``snapshot.expire``
job for it, in one transaction per VPS under the VPS row lock (the same lock a manual delete
takes), so the expiry lines up in that VPS's job queue like any other delete. ``deleting`` frees
the slot at once and takes the snapshot out of the next sweep's query, so a snapshot is never
queued twice. Time comes from the injected clock: after downtime, everything that expired
meanwhile is swept by the first run.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import structlog

from vpsnap.domain.audit import SCHEDULER, AuditAction, Target
from vpsnap.domain.clock import Clock
from vpsnap.domain.model import JobType, SnapshotStatus
from vpsnap.domain.ports import JobEvents, Store, Transaction
from vpsnap.domain.queue import enqueue
from vpsnap.events.audit import record

log = structlog.get_logger("vpsnap.retention")


async def sweep_expired(
    store: Store, events: JobEvents, clock: Clock, *, limit: int = 100
) -> list[str]:
    """Queue a ``snapshot.expire`` job for every expired ``available`` snapshot, reading them
    ``limit`` at a time; returns the job ids."""
    now = clock.now()
    job_ids: list[str] = []
    seen: set[tuple[str, str]] = set()
    while True:
        async with store.transaction(read_only=True) as tx:
            batch = await tx.expired_snapshots(now, limit)
        names_by_vps: dict[str, list[str]] = defaultdict(list)
        for snapshot in batch:
            if (snapshot.vps_id, snapshot.name) not in seen:
                seen.add((snapshot.vps_id, snapshot.name))
                names_by_vps[snapshot.vps_id].append(snapshot.name)
        for vps_id, names in names_by_vps.items():
            async with store.transaction() as tx:
                job_ids += await _expire(tx, clock, vps_id, names, now)
        # Every snapshot handled leaves the query's result (it is deleting now, or was not
        # available after all); a batch of nothing new means nothing more can be done now.
        if len(batch) < limit or not names_by_vps:
            break
    if job_ids:
        events.jobs_queued()
    return job_ids


async def _expire(
    tx: Transaction, clock: Clock, vps_id: str, names: list[str], now: datetime
) -> list[str]:
    vps = await tx.get_vps(vps_id, lock=True)
    if vps is None:
        return []
    job_ids = []
    for name in names:
        # The scan ran without the lock: a user may have deleted or restored it since.
        if not await mark_deleting(tx, vps_id, name, expired_at=now):
            continue
        job = await enqueue(
            tx, clock, vps, JobType.SNAPSHOT_EXPIRE, snapshot_name=name, created_by=SCHEDULER
        )
        await record(
            tx,
            now,
            SCHEDULER,
            AuditAction.SNAPSHOT_EXPIRE,
            account_id=vps.account_id,
            target=Target("snapshot", name),
            vps_id=vps.id,
            details={"jobId": job.id},
        )
        log.info("snapshot_expiry_queued", vps_id=vps_id, snapshot=name, job_id=job.id)
        job_ids.append(job.id)
    return job_ids


async def mark_deleting(
    tx: Transaction, vps_id: str, name: str, *, expired_at: datetime | None = None
) -> bool:
    """Move an ``available`` snapshot (expired by ``expired_at``, when given) to ``deleting``
    under the caller's VPS lock; False when it is not (or no longer) in that state.

    The move is conditional and read back, because a restore job claimed at this moment moves
    the snapshot to ``restoring`` without the VPS lock: that restore wins, the snapshot stays.
    """
    snapshot = await tx.get_snapshot(vps_id, name)
    if snapshot is None or snapshot.status is not SnapshotStatus.AVAILABLE:
        return False
    if expired_at is not None and snapshot.expires_at > expired_at:
        return False
    await tx.set_snapshot_status(
        vps_id, name, SnapshotStatus.DELETING, only_from=SnapshotStatus.AVAILABLE
    )
    marked = await tx.get_snapshot(vps_id, name)
    return marked is not None and marked.status is SnapshotStatus.DELETING
