"""``snapshot.create``: take the snapshot on every disk, then mark it available."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vpsnap.domain.model import Consistency, Job, Vps
from vpsnap.domain.ports import HypervisorDriver, SnapshotRequest, Transaction


class CreateSnapshotHandler:
    async def prepare(self, tx: Transaction, job: Job, vps: Vps) -> None:
        return None

    async def perform(self, driver: HypervisorDriver, job: Job, vps: Vps) -> dict[str, Any]:
        name = job.snapshot_name or ""
        if job.attempts > 1:
            # A re-run after a worker died: ask the hypervisor what the earlier attempt left.
            present = {p.name: p for p in await driver.list_restore_points(vps)}
            existing = present.get(name)
            if existing is not None and set(existing.disks) == set(vps.disks):
                # The earlier attempt finished on the hypervisor before its worker died.
                return {
                    "consistency": Consistency.CRASH.value,
                    "includesMemoryState": existing.vm_state_size > 0,
                }
            if existing is not None:
                # It died half-way: start again from nothing.
                await driver.delete_snapshot(vps, name)
        # On a first attempt the driver itself refuses a name already on disk (a snapshot
        # vpsnap did not make, which it never touches) with SnapshotNameTaken.
        taken = await driver.create_snapshot(
            vps,
            SnapshotRequest(
                name=name,
                include_memory_state=bool(job.payload.get("includeMemoryState", False)),
                quiesce=bool(job.payload.get("quiesce", True)),
            ),
        )
        return {
            "consistency": taken.consistency.value,
            "includesMemoryState": taken.includes_memory_state,
        }

    async def succeed(
        self, tx: Transaction, job: Job, vps: Vps, facts: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        name = job.snapshot_name or ""
        await tx.record_snapshot_taken(
            vps.id,
            name,
            Consistency(facts["consistency"]),
            includes_memory_state=bool(facts["includesMemoryState"]),
            parent_name=vps.current_snapshot,
        )
        await tx.set_current_snapshot(vps.id, name)
        return {"name": name}

    async def undo(self, tx: Transaction, job: Job, vps: Vps) -> None:
        # The slot is given back at once; the driver already left nothing on disk.
        await tx.remove_snapshot(vps.id, job.snapshot_name or "")
