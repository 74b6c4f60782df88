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


class LeaseLost(Exception):
    """This worker no longer holds the job's lease: another worker owns the job now."""


async def promote_next(tx: Transaction, vps_id: str) -> Job | None:
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
