"""``snapshot.restore``: roll every disk back to the snapshot, keeping the power state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vpsnap.domain.model import Job, SnapshotStatus, VmConfig, Vps
from vpsnap.domain.ports import HypervisorDriver, Transaction
from vpsnap.services.snapshots import RESTORE_VM_CONFIG


async def _move(
    tx: Transaction, job: Job, vps: Vps, old: SnapshotStatus, new: SnapshotStatus
) -> None:
    # Conditional: a delete accepted behind this restore has already made the snapshot
    # `deleting` (and given its slot back); the restore must not undo that.
    await tx.set_snapshot_status(vps.id, job.snapshot_name or "", new, only_from=old)


class RestoreSnapshotHandler:
    async def prepare(self, tx: Transaction, job: Job, vps: Vps) -> None:
        await _move(tx, job, vps, SnapshotStatus.AVAILABLE, SnapshotStatus.RESTORING)

    async def perform(self, driver: HypervisorDriver, job: Job, vps: Vps) -> dict[str, Any]:
        # Applying a snapshot is idempotent: a re-run rolls back to the same point again.
        outcome = await driver.restore_snapshot(
            vps,
            job.snapshot_name or "",
            # The VM configuration the snapshot's RAM state fits, recorded with it and put in
            # the job when the restore was asked for (issue 9, kind 3).
            recorded=VmConfig.from_json(job.payload.get(RESTORE_VM_CONFIG)),
        )
        return {
            "powerStateBefore": outcome.power_state_before.value,
            "powerStateAfter": outcome.power_state_after.value,
        }

    async def succeed(
        self, tx: Transaction, job: Job, vps: Vps, facts: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        name = job.snapshot_name or ""
        await _move(tx, job, vps, SnapshotStatus.RESTORING, SnapshotStatus.AVAILABLE)
        # The restored snapshot becomes the parent of the next one.
        await tx.set_current_snapshot(vps.id, name)
        return {"name": name, **facts}

    async def undo(self, tx: Transaction, job: Job, vps: Vps) -> None:
        await _move(tx, job, vps, SnapshotStatus.RESTORING, SnapshotStatus.AVAILABLE)
