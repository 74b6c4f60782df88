"""Power actions (start, shutdown, stop, restart, reset): queued as ``vps.power`` jobs.

A power action goes through the VPS's job queue like a snapshot operation, so it never runs
in the middle of a snapshot or restore of the same VPS.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpsnap.domain.audit import Actor, AuditAction, Target
from vpsnap.domain.auth import Principal
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import VpsNotReady
from vpsnap.domain.job_types import PowerPayload
from vpsnap.domain.model import Job, JobType, PowerAction
from vpsnap.domain.ports import JobEvents, Store
from vpsnap.domain.queue import enqueue
from vpsnap.domain.rules import service_gate
from vpsnap.events.audit import AuditTrail
from vpsnap.events.context import current_origin
from vpsnap.services.access import owned_vps
from vpsnap.services.jobs import wake_worker
from vpsnap.services.nodes import NodeDirectory


@dataclass(frozen=True, slots=True)
class PowerService:
    store: Store
    events: JobEvents
    clock: Clock
    nodes: NodeDirectory
    max_jobs_per_vps: int | None = None
    """Unfinished jobs one VPS may have; a request beyond it is ``VpsQueueFull``."""

    async def request(
        self, principal: Principal, vps_id: str, action: PowerAction, *, force: bool = False
    ) -> Job:
        """Queue ``action`` (audited as ``vps.<action>``, refusals as ``failed``)."""
        audit = AuditTrail(self.store, self.clock)
        async with audit.refusals(
            Actor.of(principal),
            AuditAction(f"vps.{action.value}"),
            account_id=principal.account_id,
            target=Target("vps", vps_id),
            vps_id=vps_id,
        ):
            return await self._request(principal, vps_id, action, force=force)

    async def _request(
        self, principal: Principal, vps_id: str, action: PowerAction, *, force: bool
    ) -> Job:
        async with self.store.transaction() as tx:
            vps = await owned_vps(tx, principal, vps_id, lock=True)
            gate = service_gate(vps)
            if not gate.allowed:
                raise VpsNotReady(gate.reason or "The VPS is not ready.")
            if vps.machine is None:
                # Refused here, not in the job: the answer cannot change by waiting.
                raise VpsNotReady(
                    f"{vps.name} has no VM to power: it is registered with disk images only."
                )
            await self.nodes.require_available(tx, vps)
            job = await enqueue(
                tx,
                self.clock,
                vps,
                JobType.VPS_POWER,
                snapshot_name=None,
                payload=PowerPayload(action=action, force=force),
                max_unfinished=self.max_jobs_per_vps,
                created_by=Actor.of(principal),
                request_id=current_origin().request_id,
            )
            await AuditTrail(self.store, self.clock).record(
                tx,
                Actor.of(principal),
                AuditAction(f"vps.{action.value}"),
                account_id=principal.account_id,
                target=Target("vps", vps.id),
                vps_id=vps.id,
                details={"jobId": job.id, "force": force},
            )
        wake_worker(self.events, job)
        return job
