"""Use cases on jobs: read one, wait for it to change (long-poll), and queue new ones."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from vpsnap.domain.auth import Principal
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import JobNotFound, VpsQueueFull
from vpsnap.domain.ids import new_id
from vpsnap.domain.model import Job, JobStatus, JobType, Snapshot, Vps
from vpsnap.domain.ports import JobEvents, Store, Transaction
from vpsnap.domain.rules import lane_for

# What a caller told "queue full" should wait before trying again (seconds): long enough for a
# few quick jobs to run, short enough not to matter to a script.
QUEUE_FULL_RETRY_SECONDS = 5


async def enqueue(
    tx: Transaction,
    clock: Clock,
    vps: Vps,
    job_type: JobType,
    *,
    snapshot_name: str | None,
    payload: dict[str, Any] | None = None,
    snapshot: Snapshot | None = None,
    max_unfinished: int | None = None,
) -> Job:
    """Queue a job for a VPS whose row the caller has locked.

    Jobs of one VPS never run concurrently: behind an unfinished job the new one waits as
    ``pending`` and is promoted, in arrival order, when the one before it ends. ``snapshot`` is
    the snapshot the job acts on, when it exists (it decides the lane of a restore).

    Raises ``VpsQueueFull`` when ``max_unfinished`` is given and the VPS already has that many
    unfinished jobs: requests of users are bounded, the scheduler's own work (expiry) is not.
    """
    if max_unfinished is not None and await tx.count_unfinished_jobs(vps.id) >= max_unfinished:
        raise VpsQueueFull(
            f"{vps.name} already has {max_unfinished} unfinished jobs, the most one VPS may "
            f"queue. Retry in {QUEUE_FULL_RETRY_SECONDS} s or once some have run.",
            extensions={"retryAfter": QUEUE_FULL_RETRY_SECONDS, "maxJobs": max_unfinished},
        )
    waiting = await tx.has_active_job(vps.id)
    payload = payload or {}
    job = Job(
        id=new_id("job"),
        account_id=vps.account_id,
        vps_id=vps.id,
        type=job_type,
        status=JobStatus.PENDING if waiting else JobStatus.QUEUED,
        snapshot_name=snapshot_name,
        payload=payload,
        progress=0,
        result=None,
        error=None,
        attempts=0,
        created_at=clock.now(),
        lane=lane_for(job_type, payload, snapshot),
        node=vps.node,
    )
    await tx.add_job(job, vps.node)
    return job


@dataclass(frozen=True, slots=True)
class JobService:
    store: Store
    events: JobEvents

    async def get(self, principal: Principal, job_id: str) -> Job:
        async with self.store.transaction(read_only=True) as tx:
            job = await tx.get_job(job_id)
        if job is None or job.account_id != principal.account_id:
            raise JobNotFound(f"No job with id {job_id!r} in this account.")
        return job

    async def wait(self, principal: Principal, job_id: str, timeout: float) -> Job:
        """The job as soon as its status differs from now, or after ``timeout`` seconds."""
        if timeout <= 0:
            return await self.get(principal, job_id)
        deadline = time.monotonic() + timeout
        # Watch before reading, so a change between the read and the wait is not lost.
        with self.events.watch(job_id) as watch:
            job = await self.get(principal, job_id)
            seen = job.status
            while not job.status.is_terminal:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await watch.wait(remaining):
                    break
                # Ownership was checked above; the notifier's copy is the committed state.
                job = watch.latest or await self.get(principal, job_id)
                if job.status != seen:
                    break
            return job
