"""Queue transitions that end a job: record the outcome and promote the VPS's next job.

Every function here runs inside the caller's transaction, after locking the VPS row, so that a
create arriving at the same moment sees either the running job (and waits as pending) or the
promoted one, never neither.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from vpsnap.domain.model import Job, JobStatus
from vpsnap.domain.ports import Transaction


async def still_ours(tx: Transaction, job_id: str, worker: str) -> Job | None:
    """The job if this worker still holds its lease; None when it was taken over."""
    job = await tx.get_job(job_id)
    if job is None or job.status is not JobStatus.IN_PROGRESS or job.lease_owner != worker:
        return None
    return job


async def promote_next(tx: Transaction, vps_id: str) -> Job | None:
    pending = await tx.next_pending_job(vps_id)
    if pending is None:
        return None
    promoted = dataclasses.replace(pending, status=JobStatus.QUEUED)
    await tx.update_job(promoted)
    return promoted


async def complete(
    tx: Transaction, job: Job, now: datetime, result: dict[str, Any] | None
) -> tuple[Job, Job | None]:
    """Mark the job completed; returns it and the VPS's promoted next job, if any."""
    done = dataclasses.replace(
        job,
        status=JobStatus.COMPLETED,
        progress=100,
        result=result,
        finished_at=now,
        lease_owner=None,
        lease_expires_at=None,
    )
    await tx.update_job(done)
    return done, await promote_next(tx, job.vps_id)


async def fail(
    tx: Transaction, job: Job, now: datetime, error: dict[str, Any]
) -> tuple[Job, Job | None]:
    """Mark the job failed with a problem summary; returns it and the promoted next job."""
    failed = dataclasses.replace(
        job,
        status=JobStatus.FAILED,
        error=error,
        finished_at=now,
        lease_owner=None,
        lease_expires_at=None,
    )
    await tx.update_job(failed)
    return failed, await promote_next(tx, job.vps_id)
