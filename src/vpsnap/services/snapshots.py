"""Use cases on a VPS's snapshots: list with limits and gates, create, delete, restore."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta

import structlog

from vpsnap.domain.audit import Actor, AuditAction, Target
from vpsnap.domain.auth import Principal
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import (
    SnapshotBusy,
    SnapshotLimitReached,
    SnapshotNameTaken,
    SnapshotNotFound,
    SnapshotsNotIncluded,
    VpsNotReady,
)
from vpsnap.domain.job_types import RestorePayload, SnapshotPayload
from vpsnap.domain.model import (
    Consistency,
    Job,
    JobType,
    PowerState,
    Snapshot,
    SnapshotOrigin,
    SnapshotStatus,
    VmFacts,
    Vps,
)
from vpsnap.domain.ports import JobEvents, Store, Transaction
from vpsnap.domain.queue import enqueue
from vpsnap.domain.rules import (
    ALLOWED,
    Gate,
    SlotUsage,
    can_create,
    can_restore,
    is_valid_snapshot_name,
    name_key,
    not_on_plan_reason,
    service_gate,
    slot_usage,
)
from vpsnap.domain.storage import SpaceGuard
from vpsnap.domain.vm_rules import live_create_gate, memory_gate, restore_base, restore_gate
from vpsnap.events.audit import AuditTrail
from vpsnap.events.context import current_origin
from vpsnap.services.access import owned_vps, owned_vps_with_snapshots
from vpsnap.services.jobs import wake_worker
from vpsnap.services.nodes import NodeDirectory
from vpsnap.services.storage import check_space, published_stores, space_gate

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SnapshotListing:
    vps: Vps
    snapshots: list[Snapshot]
    usage: SlotUsage
    available: bool
    reason: str | None
    can_create: Gate
    can_restore: Gate
    # issue 9 (kinds 2, 3, 5): what the running VM allows; additive to the contract's gates.
    can_create_with_memory: Gate = ALLOWED
    restore_gates: dict[str, Gate] = field(default_factory=dict)
    """Per snapshot name: whether that snapshot can be restored now."""


@dataclass(frozen=True, slots=True)
class CreateSnapshot:
    name: str
    description: str | None = None
    include_memory_state: bool = False
    quiesce: bool = True


@dataclass(frozen=True, slots=True)
class SnapshotService:
    store: Store
    events: JobEvents
    clock: Clock
    retention: timedelta
    nodes: NodeDirectory
    max_jobs_per_vps: int | None = None
    """Unfinished jobs one VPS may have; a request beyond it is ``VpsQueueFull``."""
    space: SpaceGuard = field(default_factory=SpaceGuard)
    """The free space a create must leave on the VPS's data store (``insufficient_storage``)."""

    @property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.store, self.clock)

    async def listing(self, principal: Principal, vps_id: str) -> SnapshotListing:
        # Small: one VPS by id, its snapshots (bounded by its slots), its stores by key.
        async with self.store.transaction(read_only=True, small=True) as tx:
            vps, snapshots = await owned_vps_with_snapshots(tx, principal, vps_id)
            node = await self.nodes.displayed_gate(tx, vps)
            stores = await published_stores(tx, vps)
        usage = slot_usage(vps, snapshots)
        available = usage.total > 0
        facts = self._vm_facts(vps)

        def with_node(gate: Gate) -> Gate:
            # The VPS's own reasons come first; an unreachable host is said when they allow.
            return gate if not gate.allowed else node

        create_gate = live_create_gate(can_create(vps, usage, principal), facts)
        if create_gate.allowed:
            # The free-space guard (docs/operations.md, "Disk space"), for a disk-only snapshot.
            create_gate = space_gate(vps, stores, self.space, self.clock.now())
        restore_gate_now = can_restore(vps, snapshots, principal)
        base = restore_base(vps, principal)
        return SnapshotListing(
            vps=vps,
            snapshots=snapshots,
            usage=usage,
            available=available,
            reason=None if available else not_on_plan_reason(vps),
            # The VPS's own reasons come first; an unreachable host is said when they allow.
            can_create=create_gate if not create_gate.allowed else node,
            can_restore=restore_gate_now if not restore_gate_now.allowed else node,
            can_create_with_memory=memory_gate(
                create_gate if not create_gate.allowed else node, facts
            ),
            restore_gates={s.name: restore_gate(s, base, facts) for s in snapshots},
        )

    @staticmethod
    def _vm_facts(vps: Vps) -> VmFacts | None:
        """The running VM's facts as its node's agent last published them, or None (no VM, not
        running, not observed yet). A read of the store, never of a hypervisor: a listing
        never waits on a host (in scale-out the API cannot reach one at all)."""
        if vps.machine is None or vps.power_state not in (PowerState.RUNNING, PowerState.PAUSED):
            return None
        return vps.vm_facts

    async def create(self, principal: Principal, vps_id: str, request: CreateSnapshot) -> Job:
        """Accept a snapshot (contract 6.2): checks, the ``creating`` row, the job and the
        audit event in one transaction; a refusal is audited as ``failed``."""
        actor, target = Actor.of(principal), Target("snapshot", request.name)
        action = AuditAction.SNAPSHOT_CREATE
        async with self.audit.refusals(
            actor, action, account_id=principal.account_id, target=target, vps_id=vps_id
        ):
            return await self._create(principal, vps_id, request)

    async def _create(self, principal: Principal, vps_id: str, request: CreateSnapshot) -> Job:
        async with self.store.transaction() as tx:
            # The VPS row lock serializes concurrent creates: the slot check and the insert
            # below see every snapshot committed before them.
            vps = await owned_vps(tx, principal, vps_id, lock=True)
            snapshots = await tx.list_snapshots(vps.id)
            self._check_can_create(vps, snapshots, request.name)
            await self.nodes.require_available(tx, vps)
            now = self.clock.now()
            await check_space(
                tx, vps, self.space, now, include_memory_state=request.include_memory_state
            )
            await tx.add_snapshot(
                Snapshot(
                    vps_id=vps.id,
                    name=request.name,
                    description=request.description,
                    status=SnapshotStatus.CREATING,
                    origin=SnapshotOrigin.MANUAL,
                    consistency=Consistency.CRASH,
                    includes_memory_state=False,
                    parent_name=None,
                    created_at=now,
                    expires_at=now + self.retention,
                )
            )
            job = await enqueue(
                tx,
                self.clock,
                vps,
                JobType.SNAPSHOT_CREATE,
                snapshot_name=request.name,
                payload=SnapshotPayload(
                    include_memory_state=request.include_memory_state, quiesce=request.quiesce
                ),
                max_unfinished=self.max_jobs_per_vps,
                created_by=Actor.of(principal),
                request_id=current_origin().request_id,
            )
            await self._audited(tx, principal, AuditAction.SNAPSHOT_CREATE, vps, job)
        wake_worker(self.events, job)
        return job

    async def _audited(
        self, tx: Transaction, principal: Principal, action: AuditAction, vps: Vps, job: Job
    ) -> None:
        await self.audit.record(
            tx,
            Actor.of(principal),
            action,
            account_id=principal.account_id,
            target=Target("snapshot", job.snapshot_name or ""),
            vps_id=vps.id,
            details={"jobId": job.id},
        )

    @staticmethod
    def _check_can_create(vps: Vps, snapshots: list[Snapshot], name: str) -> None:
        gate = service_gate(vps)
        if not gate.allowed:
            raise VpsNotReady(gate.reason or "The VPS is not ready.")
        usage = slot_usage(vps, snapshots)
        if usage.total == 0:
            raise SnapshotsNotIncluded(not_on_plan_reason(vps))
        if any(name_key(s.name) == name_key(name) for s in snapshots):
            raise SnapshotNameTaken(f"A snapshot named {name!r} already exists on {vps.name}.")
        if usage.used >= usage.total:
            raise SnapshotLimitReached(
                f"All {usage.total} snapshot slots of {vps.name} are in use. Delete a snapshot "
                f"or add slots through POST /api/v2/vps/{vps.id}/actions/config.",
                extensions={"totalSnapshots": usage.total, "usedSnapshots": usage.used},
            )

    async def delete(self, principal: Principal, vps_id: str, name: str) -> Job:
        async with self.audit.refusals(
            Actor.of(principal),
            AuditAction.SNAPSHOT_DELETE,
            account_id=principal.account_id,
            target=Target("snapshot", name),
            vps_id=vps_id,
        ):
            return await self._delete(principal, vps_id, name)

    async def _delete(self, principal: Principal, vps_id: str, name: str) -> Job:
        async with self.store.transaction() as tx:
            vps = await owned_vps(tx, principal, vps_id, lock=True)
            snapshot = await self._existing(tx, vps, name, failed_too=True)
            if snapshot.status in (SnapshotStatus.CREATING, SnapshotStatus.DELETING):
                raise SnapshotBusy(
                    f"Snapshot {snapshot.name!r} is {snapshot.status.value}; wait for that job."
                )
            await self.nodes.require_available(tx, vps)
            await tx.update_snapshot(dataclasses.replace(snapshot, status=SnapshotStatus.DELETING))
            job = await enqueue(
                tx,
                self.clock,
                vps,
                JobType.SNAPSHOT_DELETE,
                snapshot_name=snapshot.name,
                snapshot=snapshot,
                max_unfinished=self.max_jobs_per_vps,
                created_by=Actor.of(principal),
                request_id=current_origin().request_id,
            )
            await self._audited(tx, principal, AuditAction.SNAPSHOT_DELETE, vps, job)
        wake_worker(self.events, job)
        return job

    async def restore(self, principal: Principal, vps_id: str, name: str) -> Job:
        async with self.audit.refusals(
            Actor.of(principal),
            AuditAction.SNAPSHOT_RESTORE,
            account_id=principal.account_id,
            target=Target("snapshot", name),
            vps_id=vps_id,
        ):
            return await self._restore(principal, vps_id, name)

    async def _restore(self, principal: Principal, vps_id: str, name: str) -> Job:
        async with self.store.transaction() as tx:
            vps = await owned_vps(tx, principal, vps_id, lock=True)
            snapshot = await self._existing(tx, vps, name)
            gate = service_gate(vps)
            if not gate.allowed:
                raise VpsNotReady(gate.reason or "The VPS is not ready.")
            if snapshot.status in (SnapshotStatus.CREATING, SnapshotStatus.DELETING):
                raise SnapshotBusy(
                    f"Snapshot {snapshot.name!r} is {snapshot.status.value}; it cannot be "
                    "restored now."
                )
            await self.nodes.require_available(tx, vps)
            job = await enqueue(
                tx,
                self.clock,
                vps,
                JobType.SNAPSHOT_RESTORE,
                snapshot_name=snapshot.name,
                snapshot=snapshot,
                max_unfinished=self.max_jobs_per_vps,
                created_by=Actor.of(principal),
                request_id=current_origin().request_id,
                # issue 9, kind 3: the driver refuses a VM whose RAM size or machine type changed.
                payload=RestorePayload(vm_config=snapshot.vm_config),
            )
            await self._audited(tx, principal, AuditAction.SNAPSHOT_RESTORE, vps, job)
        wake_worker(self.events, job)
        return job

    @staticmethod
    async def _existing(
        tx: Transaction, vps: Vps, name: str, *, failed_too: bool = False
    ) -> Snapshot:
        # A name that breaks the name rule cannot exist: answered without asking the store.
        snapshot = await tx.get_snapshot(vps.id, name) if is_valid_snapshot_name(name) else None
        if snapshot is None:
            raise SnapshotNotFound(f"{vps.name} has no snapshot named {name!r}.")
        if snapshot.status is SnapshotStatus.FAILED and not failed_too:
            # Reconciliation found it missing from the disks: only deleting it makes sense.
            raise SnapshotNotFound(
                f"Snapshot {snapshot.name!r} is missing from the disks of {vps.name} "
                "(status failed); it can only be deleted."
            )
        return snapshot
