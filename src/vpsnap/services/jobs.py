"""Use cases on jobs: read one, list them, wait for one to change (long-poll). Queueing is
``vpsnap.domain.queue.enqueue``."""

from __future__ import annotations

import time
from dataclasses import dataclass

from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import FieldError, InvalidRequest, JobNotFound
from vpsnap.domain.ids import is_valid_id
from vpsnap.domain.model import Job, JobStatus
from vpsnap.domain.ports import JobEvents, Store
from vpsnap.services.access import owned_vps
from vpsnap.services.pagination import decode_cursor, encode_cursor

MAX_PAGE_SIZE = 100


def wake_worker(events: JobEvents, job: Job) -> None:
    """After the commit that queued ``job``: wake the worker if a claim could take it now.

    A job queued behind an unfinished one of its VPS waits ``pending``; no claim takes it until
    that one's end promotes it, and the end wakes the worker itself (``Worker._finish``). A
    wake-up for it only made the worker claim in vain: with a queue to drain, every create
    was pending and each cost an empty claim — on SQLite a write transaction competing with
    the next create for the write lock (docs/performance.md, "Draining queued creates").
    """
    if job.status is JobStatus.QUEUED:
        events.jobs_queued()


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
        before = decode_cursor(cursor, "job") if cursor is not None else None
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
            async with self.store.transaction(read_only=True, small=True) as tx:
                job = await tx.get_job(job_id)  # by its primary key
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
