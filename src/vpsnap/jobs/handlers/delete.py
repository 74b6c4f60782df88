"""``snapshot.delete`` and ``snapshot.expire``: remove the snapshot from every disk."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vpsnap.domain.model import Job, SnapshotStatus, Vps
from vpsnap.domain.ports import HypervisorDriver, Transaction
from vpsnap.domain.rules import name_key


class DeleteSnapshotHandler:
    async def prepare(self, tx: Transaction, job: Job, vps: Vps) -> None:
        return None

    async def perform(self, driver: HypervisorDriver, job: Job, vps: Vps) -> dict[str, Any]:
        # Deleting what is already gone succeeds, so a re-run after a crash is harmless.
        await driver.delete_snapshot(vps, job.snapshot_name or "")
        return {}

    async def succeed(
        self, tx: Transaction, job: Job, vps: Vps, facts: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        name = job.snapshot_name or ""
        await tx.remove_snapshot(vps.id, name)
        if vps.current_snapshot is not None and name_key(vps.current_snapshot) == name_key(name):
            await tx.set_current_snapshot(vps.id, None)
        return {"name": name}

    async def undo(self, tx: Transaction, job: Job, vps: Vps) -> None:
        await tx.set_snapshot_status(
            vps.id,
            job.snapshot_name or "",
            SnapshotStatus.AVAILABLE,
            only_from=SnapshotStatus.DELETING,
        )
