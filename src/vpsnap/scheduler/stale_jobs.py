"""Jobs that cannot start: queued for a node whose agent is offline for too long.

Jobs already queued for an offline node wait for it (an agent restart takes seconds). A job
not started within ``timeout`` while its node is offline fails with ``node_unavailable`` and
gives back what its request took (its slot, the snapshot's status), exactly as a failed job
does, and the VPS's next job is promoted (it gets the same treatment once it is as old).
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from vpsnap.domain import queue
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import NodeUnavailable
from vpsnap.domain.model import JobStatus
from vpsnap.domain.nodes import NodeState
from vpsnap.domain.ports import JobEvents, Store
from vpsnap.domain.problems import error_summary
from vpsnap.jobs.handlers import HANDLERS
from vpsnap.services.nodes import NodeDirectory

log = structlog.get_logger("vpsnap.scheduler")

_BATCH = 100


async def fail_unstartable_jobs(
    store: Store, events: JobEvents, clock: Clock, nodes: NodeDirectory, timeout: timedelta
) -> list[str]:
    """Fail every queued or pending job older than ``timeout`` whose node is offline; returns
    their ids."""
    failed: list[str] = []
    async with store.transaction(read_only=True) as tx:
        names = [n.name for n in await tx.list_nodes()]
        stats = await tx.node_stats()
        states = await nodes.states(tx, {*names, *stats})
    before = clock.now() - timeout
    for name, state in sorted(states.items()):
        if state is not NodeState.OFFLINE:
            continue
        async with store.transaction(read_only=True) as tx:
            stale = await tx.unstarted_jobs(name, before, _BATCH)
        failed += [job.id for job in stale if await _fail(store, events, clock, job.id, name)]
    return failed


async def _fail(store: Store, events: JobEvents, clock: Clock, job_id: str, node: str) -> bool:
    now = clock.now()
    async with store.transaction() as tx:
        job = await tx.get_job(job_id)
        if job is None or job.status not in (JobStatus.QUEUED, JobStatus.PENDING):
            return False
        vps = await tx.get_vps(job.vps_id, lock=True)
        error = NodeUnavailable(
            f"The job was not started within the time allowed: the host of this VPS ({node}) "
            "has been unreachable. Nothing was changed.",
        )
        ended = await queue.fail_unstarted(tx, job, error_summary(error), now)
        if ended is None:
            return False
        promoted = ended[1]
        if vps is not None:
            await HANDLERS[job.type].undo(tx, job, vps)
    log.warning("job_not_started", job_id=job.id, node=node, code=error.code)
    events.job_changed(job.id)
    if promoted is not None:
        events.job_changed(promoted.id, promoted)
    return True
