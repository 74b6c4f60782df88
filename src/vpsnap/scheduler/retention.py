"""The retention sweep: snapshots past their ``expires_at`` are queued for deletion, once each.

A sweep marks every expired ``available`` snapshot ``deleting`` and queues a ``snapshot.expire``
job for it, so the expiry lines up in that VPS's job queue like any other delete. ``deleting``
frees the slot at once and takes the snapshot out of the next sweep's query, so a snapshot is
never queued twice. Time comes from the injected clock: after downtime, everything that expired
meanwhile is swept by the first run.

Set-based (issue 15): the sweep works in batches, each batch one transaction of a fixed number
of statements whatever its size: read up to ``limit`` expired snapshots, lock their VPS rows
(in id order, the same lock a manual delete takes), move every snapshot of those VPSes that is
still ``available`` and expired to ``deleting`` in one conditional update, find which of the
VPSes already have an unfinished job, insert the jobs, insert the audit events. A batch is
bounded by ``limit`` VPSes' snapshots (a VPS holds at most its slots). A batch holds the
write lock for milliseconds, not for the whole sweep. Each expired snapshot still gets its own
job (docs/performance.md says why, with the figures).
"""

from __future__ import annotations

from datetime import datetime

import structlog

from vpsnap.domain.audit import SCHEDULER, AuditAction, Target
from vpsnap.domain.clock import Clock
from vpsnap.domain.model import JobType, SnapshotStatus
from vpsnap.domain.ports import JobEvents, Store, Transaction
from vpsnap.domain.queue import JobRequest, enqueue_many
from vpsnap.events.audit import new_events
from vpsnap.pacing import between_pages

log = structlog.get_logger("vpsnap.retention")

# Snapshots read per batch. The statements of a batch are fixed, so larger batches save little
# time; what grows with the batch is the Python work between two awaits, which an API on the
# same event loop (vpsnap serve) waits for. Measured on 20,000 snapshots (docs/performance.md):
# 200 took as long as 500 and 2,000 (3.7-4.9 s) with event-loop stalls of p99 116-159 ms
# instead of 281-374 ms (500) and up to 2 s (2,000).
SWEEP_BATCH = 200


async def sweep_expired(
    store: Store, events: JobEvents, clock: Clock, *, limit: int = SWEEP_BATCH
) -> list[str]:
    """Queue a ``snapshot.expire`` job for every expired ``available`` snapshot, ``limit`` at a
    time (one transaction per batch); returns the job ids."""
    now = clock.now()
    job_ids: list[str] = []
    while True:
        async with store.transaction(bulk=True) as tx:
            batch, queued = await _expire_batch(tx, clock, now, limit)
        job_ids += queued
        if queued:
            # Workers may start on this batch while the next one is written.
            events.jobs_queued()
        # Every snapshot handled leaves the query's result (it is deleting now, or was not
        # available after all); a batch of nothing new means nothing more can be done now
        # (what is left belongs to another sweep running at the same time).
        if batch < limit or not queued:
            break
        await between_pages()  # paced; a stop ends the sweep here (vpsnap.pacing)
    if job_ids:
        log.info("snapshot_expiries_queued", jobs=len(job_ids))
    return job_ids


async def _expire_batch(
    tx: Transaction, clock: Clock, now: datetime, limit: int
) -> tuple[int, list[str]]:
    """One batch in the caller's transaction: how many expired snapshots it read, and the
    jobs it queued."""
    candidates = await tx.expired_snapshot_keys(now, limit)
    if not candidates:
        return 0, []
    locked = {v.id: v for v in await tx.lock_vps_rows(sorted({vps_id for vps_id, _ in candidates}))}
    # Every expired snapshot of the locked VPSes, not just the batch's: the batch is bounded by
    # `limit` VPSes' snapshots, and the statement needs no (VPS, name) list. The read ran before
    # the locks: a user may have deleted or restored some since, and a concurrent sweep may
    # have taken them; only what this statement moves is this sweep's.
    moved = await tx.mark_expired_deleting(sorted(locked), now)
    # Per VPS in order of expiry, as one enqueue after another would queue them.
    jobs = await enqueue_many(
        tx,
        clock,
        [
            JobRequest(locked[vps_id], JobType.SNAPSHOT_EXPIRE, name, created_by=SCHEDULER)
            for vps_id, name in moved
        ],
    )
    await tx.add_audit_events(
        new_events(
            now,
            SCHEDULER,
            AuditAction.SNAPSHOT_EXPIRE,
            [
                (
                    job.account_id,
                    Target("snapshot", job.snapshot_name or ""),
                    job.vps_id,
                    {"jobId": job.id},
                )
                for job in jobs
            ],
        )
    )
    return len(candidates), [job.id for job in jobs]


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
