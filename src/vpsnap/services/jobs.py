"""Use cases on jobs: read one, wait for it to change (long-poll), and queue new ones."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from vpsnap.domain.audit import Actor
from vpsnap.domain.auth import Principal
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import FieldError, InvalidRequest, JobNotFound, VpsQueueFull
from vpsnap.domain.ids import is_valid_id, new_id
from vpsnap.domain.model import Job, JobStatus, JobType, Snapshot, Vps
from vpsnap.domain.ports import JobEvents, Store, Transaction
from vpsnap.domain.rules import lane_for
from vpsnap.events.context import current_origin
from vpsnap.services.access import owned_vps
from vpsnap.services.pagination import decode_cursor, encode_cursor

# What a caller told "queue full" should wait before trying again (seconds): long enough for a
# few quick jobs to run, short enough not to matter to a script.
QUEUE_FULL_RETRY_SECONDS = 5
MAX_PAGE_SIZE = 100


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
    created_by: Actor | None = None,
) -> Job:
    """Queue a job for a VPS whose row the caller has locked.

    Jobs of one VPS never run concurrently: behind an unfinished job the new one waits as
    ``pending`` and is promoted, in arrival order, when the one before it ends. ``snapshot`` is
    the snapshot the job acts on, when it exists (it decides the lane of a restore).

    Raises ``VpsQueueFull`` when ``max_unfinished`` is given and the VPS already has that many
    unfinished jobs: requests of users are bounded, the scheduler's own work (expiry) is not.
    The job records ``created_by`` and the id of the request being served (if any).
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
        request_id=current_origin().request_id,
        created_by=created_by,
        node=vps.node,
    )
    await tx.add_job(job, vps.node)
    return job


@dataclass(frozen=True, slots=True)
class JobPage:
    items: list[Job]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


@dataclass(frozen=True, slots=True)
class JobService:
    store: Store
    events: JobEvents

    async def list(
        self,
        principal: Principal,
        *,
        vps_id: str | None = None,
        status: JobStatus | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> JobPage:
        """The account's jobs, newest first (finished ones are kept for the retention period),
        optionally of one VPS (``VpsNotFound`` when it is not the caller's) or one status."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequest(
                f"limit must be between 1 and {MAX_PAGE_SIZE}.",
                [FieldError("/query/limit", f"Between 1 and {MAX_PAGE_SIZE}.", "out_of_range")],
            )
        before = decode_cursor(cursor) if cursor is not None else None
        async with self.store.transaction(read_only=True) as tx:
            if vps_id is not None:
                await owned_vps(tx, principal, vps_id)
            rows = await tx.list_jobs(
                principal.account_id,
                vps_id=vps_id,
                status=status,
                before_id=before,
                limit=limit + 1,
            )
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].id) if len(rows) > limit else None
        return JobPage(page, next_cursor)

    async def get(self, principal: Principal, job_id: str) -> Job:
        job = None
        if is_valid_id("job", job_id):  # a malformed id cannot exist: the store is not asked
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
