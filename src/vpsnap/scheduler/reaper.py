"""The lease reaper: jobs whose worker stopped heart-beating go back to the queue."""

from __future__ import annotations

import structlog

from vpsnap.domain import queue
from vpsnap.domain.clock import Clock
from vpsnap.domain.ports import JobEvents, Store

log = structlog.get_logger("vpsnap.scheduler")


async def requeue_orphans(
    store: Store, events: JobEvents, clock: Clock, node: str | None, *, all_in_progress: bool
) -> list[str]:
    """Re-queue in-progress jobs whose lease expired (or all of them, when this process is
    known to be the only worker of the node, e.g. at embedded start-up)."""
    async with store.transaction() as tx:
        ids = await queue.requeue_orphans(tx, node, None if all_in_progress else clock.now())
    for job_id in ids:
        log.warning("job_requeued", job_id=job_id, reason="lease_expired")
        events.job_changed(job_id)
    if ids:
        events.jobs_queued()
    return ids
