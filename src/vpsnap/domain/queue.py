"""The job queue: every transition of a job, in one place (the store implements the SQL
primitives behind ``domain.ports.Transaction``; nothing else changes a job's status).

::

    enqueue ─▶ queued ──claim (lease)──▶ in_progress ──finish──▶ completed | failed
           └─▶ pending ──promote_next──▶ queued  (when the VPS's job before it ends)
    (enqueue_many: the same for many jobs at once, in one statement per step)

    in_progress ──hand_back──────▶ queued   (shutdown past the grace; attempt not counted)
    in_progress ──requeue_orphans─▶ queued   (the worker stopped renewing its lease)
    in_progress ──extend_lease───▶ in_progress (heartbeat)
    queued | pending ──fail_unstarted──▶ failed (their node stayed offline too long)

Invariants, kept here and only here:

- A VPS has at most one job ``queued`` or ``in_progress``; the others wait ``pending`` and are
  promoted in arrival order (``enqueue``, ``finish``, ``fail_unstarted``), which is what makes
  a VPS's jobs never run concurrently and run in FIFO order.
- Only the holder of a job's lease writes its progress or its end (``extend_lease``,
  ``record_journal``, ``finish``, ``hand_back`` are conditional on it): a worker that lost its
  lease (its job was re-queued and taken by another) raises ``LeaseLost`` and writes nothing.
- Every function runs in the caller's transaction; those that queue or end a job run after the
  caller locked the VPS row, so that a create arriving at the same moment sees either the
  running job (and waits as pending) or the promoted one, never neither.
- On PostgreSQL every transition also notifies (``store.sql.Channel``) inside the same
  transaction: waiters on other processes wake exactly when it commits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from vpsnap.domain.audit import Actor
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import VpsQueueFull
from vpsnap.domain.ids import new_id, new_ids
from vpsnap.domain.job_types import JobPayload
from vpsnap.domain.model import Job, JobStatus, JobType, Snapshot, Vps, VpsRef
from vpsnap.domain.ports import ClaimRequest, Transaction
from vpsnap.domain.rules import lane_for

# What a caller told "queue full" should wait before trying again (seconds): long enough for a
# few quick jobs to run, short enough not to matter to a script.
QUEUE_FULL_RETRY_SECONDS = 5


class LeaseLost(Exception):
    """This worker no longer holds the job's lease: another worker owns the job now."""


async def enqueue(
    tx: Transaction,
    clock: Clock,
    vps: Vps,
    job_type: JobType,
    *,
    snapshot_name: str | None,
    payload: JobPayload = None,
    snapshot: Snapshot | None = None,
    max_unfinished: int | None = None,
    created_by: Actor | None = None,
    request_id: str | None = None,
) -> Job:
    """Queue a job for a VPS whose row the caller has locked.

    Behind an unfinished job of the VPS the new one waits as ``pending``. ``snapshot`` is the
    snapshot the job acts on, when it exists (it decides the lane of a restore). Raises
    ``VpsQueueFull`` when ``max_unfinished`` is given and the VPS already has that many
    unfinished jobs: requests of users are bounded, the scheduler's own work (expiry) is not.
    The job records who asked for it (``created_by``) and in which request (``request_id``).
    """
    if max_unfinished is None:
        waiting = await tx.has_active_job(vps.id)
    else:
        # One count answers both questions (the same "unfinished" as has_active_job's).
        unfinished = await tx.count_unfinished_jobs(vps.id)
        if unfinished >= max_unfinished:
            raise VpsQueueFull(
                f"{vps.name} already has {max_unfinished} unfinished jobs, the most one VPS may "
                f"queue. Retry in {QUEUE_FULL_RETRY_SECONDS} s or once some have run.",
                extensions={"retryAfter": QUEUE_FULL_RETRY_SECONDS, "maxJobs": max_unfinished},
            )
        waiting = unfinished > 0
    job = Job(
        id=new_id("job"),
        account_id=vps.account_id,
        vps_id=vps.id,
        type=job_type,
        status=JobStatus.PENDING if waiting else JobStatus.QUEUED,
        snapshot_name=snapshot_name,
        payload=payload.to_json() if payload is not None else {},
        progress=0,
        result=None,
        error=None,
        attempts=0,
        created_at=clock.now(),
        lane=lane_for(job_type, payload, snapshot),
        node=vps.node,
        request_id=request_id,
        created_by=created_by,
    )
    await tx.add_job(job, vps.node)
    return job


@dataclasses.dataclass(frozen=True, slots=True)
class JobRequest:
    """One job of ``enqueue_many``: what ``enqueue`` takes, for a VPS the caller has locked."""

    vps: VpsRef
    job_type: JobType
    snapshot_name: str | None
    created_by: Actor | None = None


async def enqueue_many(tx: Transaction, clock: Clock, requests: Sequence[JobRequest]) -> list[Job]:
    """``enqueue`` for many jobs at once (the scheduler's set-based work): one statement to find
    which of their VPSes already have an unfinished job, one multi-row insert.

    The caller has locked every VPS row involved. Per VPS, the jobs queue in the order given:
    the first one is ``queued`` unless the VPS already has an unfinished job, every other one
    waits ``pending`` behind it, exactly as the same calls to ``enqueue`` one by one would do.
    No ``max_unfinished`` bound: only the scheduler's own work comes here. Payloads are for
    ``enqueue`` alone (no set-based job type carries one yet).
    """
    if not requests:
        return []
    busy = await tx.vps_with_unfinished_jobs(sorted({r.vps.id for r in requests}))
    now = clock.now()
    # One run of ids (ascending, in the order of the requests) and the lane of each job type
    # once: the sweep queues thousands per batch (docs/performance.md, "Retention sweep").
    ids = new_ids("job", len(requests))
    lanes = {t: lane_for(t, None, None) for t in {r.job_type for r in requests}}
    jobs: list[Job] = []
    for job_id, request in zip(ids, requests, strict=True):
        vps = request.vps
        waiting = vps.id in busy
        busy.add(vps.id)
        jobs.append(
            Job(
                id=job_id,
                account_id=vps.account_id,
                vps_id=vps.id,
                type=request.job_type,
                status=JobStatus.PENDING if waiting else JobStatus.QUEUED,
                snapshot_name=request.snapshot_name,
                payload={},
                progress=0,
                result=None,
                error=None,
                attempts=0,
                created_at=now,
                lane=lanes[request.job_type],
                node=vps.node,
                request_id=None,
                created_by=request.created_by,
            )
        )
    await tx.add_jobs(jobs)
    return jobs


async def claim(tx: Transaction, request: ClaimRequest) -> list[Job]:
    """The node's oldest queued jobs that fit the free slots of their lanes and the account
    shares, now ``in_progress`` and leased to the worker (their attempt counted)."""
    return await tx.claim_jobs(request)


async def extend_lease(tx: Transaction, job: Job | str, worker: str, until: datetime) -> bool:
    """The worker's heartbeat; False when it no longer holds the lease."""
    job_id = job if isinstance(job, str) else job.id
    return await tx.extend_lease(job_id, worker, until)


async def record_journal(tx: Transaction, job: Job, worker: str, journal: dict[str, Any]) -> None:
    """Store what the running job recorded; ``LeaseLost`` when the worker lost its lease."""
    if not await tx.record_job_journal(job.id, worker, journal):
        raise LeaseLost(job.id)


async def promote_next(tx: Transaction, vps_id: str) -> Job | None:
    """Queue the VPS's oldest pending job, if any (its turn has come)."""
    pending = await tx.next_pending_job(vps_id)
    if pending is None:
        return None
    promoted = dataclasses.replace(pending, status=JobStatus.QUEUED)
    await tx.update_job(promoted)
    return promoted


async def finish(
    tx: Transaction,
    job: Job,
    worker: str,
    now: datetime,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> tuple[Job, Job | None]:
    """Mark the job completed (or failed, with a problem summary) if this worker still holds
    its lease; returns it and the VPS's promoted next job. Raises ``LeaseLost`` otherwise, which
    must roll the whole transaction back."""
    ended = dataclasses.replace(
        job,
        status=JobStatus.FAILED if error is not None else JobStatus.COMPLETED,
        progress=job.progress if error is not None else 100,
        result=result,
        error=error,
        finished_at=now,
        lease_owner=None,
        lease_expires_at=None,
    )
    if not await tx.finish_job(ended, worker):
        raise LeaseLost(job.id)
    return ended, await promote_next(tx, job.vps_id)


async def hand_back(tx: Transaction, job: Job, worker: str) -> bool:
    """Put a job this worker holds back in the queue (a shutdown past its grace), not counting
    the attempt; False when the worker no longer held it."""
    return await tx.hand_back(job.id, worker)


async def requeue_orphans(
    tx: Transaction, node: str | None, expired_before: datetime | None
) -> list[str]:
    """Put ``in_progress`` jobs whose lease ran out before ``expired_before`` (all of them when
    None: the caller knows it is the node's only worker, at start-up) back in the queue; their
    re-run reads their journal. Returns their ids."""
    return await tx.requeue_orphaned(node, expired_before)


async def fail_unstarted(
    tx: Transaction, job: Job, error: dict[str, Any], now: datetime
) -> tuple[Job, Job | None] | None:
    """Fail a job that never started (``queued`` or ``pending``) with a problem summary and, if
    it held the VPS's turn, promote the next one; None when it has started or ended since."""
    ended = dataclasses.replace(job, error=error, finished_at=now, status=JobStatus.FAILED)
    if not await tx.fail_unstarted_job(ended):
        return None
    promoted = await promote_next(tx, job.vps_id) if job.status is JobStatus.QUEUED else None
    return ended, promoted
