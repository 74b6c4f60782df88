"""``snapshot.delete`` and ``snapshot.expire``: remove the snapshot from every disk.

Only the snapshot vpsnap made is deleted (``jobs.handlers.ownership``): when the snapshot of
that name on disk is not the one recorded (someone deleted vpsnap's and made another of the
same name), the row goes and the disk is left alone (reconciliation reports it as foreign).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog

from vpsnap.domain.model import Job, Snapshot, SnapshotStatus, Vps
from vpsnap.domain.ports import HypervisorDriver, Transaction
from vpsnap.jobs.handlers.ownership import find_point, is_the_recorded_one
from vpsnap.jobs.journal import JobJournal

log = structlog.get_logger("vpsnap.worker")


async def delete_own_snapshot(
    driver: HypervisorDriver, vps: Vps, name: str, recorded: datetime | None
) -> bool:
    """Delete snapshot ``name`` from the disks if it is the one vpsnap recorded making (creation
    date ``recorded``; None: vpsnap's by its row alone). Returns whether anything was deleted;
    deleting what is already gone succeeds, so re-runs are harmless."""
    point = find_point(await driver.list_restore_points(vps), name)
    if point is None:
        return False
    if not is_the_recorded_one(point, recorded):
        log.warning(
            "snapshot_not_ours",
            vps_id=vps.id,
            snapshot=name,
            recorded=recorded.isoformat() if recorded else None,
            on_disk=point.created_at.isoformat() if point.created_at else None,
        )
        return False
    await driver.delete_snapshot(vps, name)
    return True


class DeleteSnapshotHandler:
    async def prepare(
        self, tx: Transaction, job: Job, vps: Vps, snapshots: Sequence[Snapshot]
    ) -> None:
        return None

    async def perform(
        self, driver: HypervisorDriver, job: Job, vps: Vps, journal: JobJournal
    ) -> dict[str, Any]:
        name = job.snapshot
        row = await journal.snapshot(vps.id, name)
        recorded = row.disk_created_at if row is not None else None
        return {"removedFromDisk": await delete_own_snapshot(driver, vps, name, recorded)}

    async def succeed(
        self, tx: Transaction, job: Job, vps: Vps, facts: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        name = job.snapshot
        # The store re-links its children and the VPS's current pointer to its parent.
        await tx.remove_snapshot(vps.id, name)
        return {"name": name}

    async def undo(self, tx: Transaction, job: Job, vps: Vps) -> None:
        await tx.set_snapshot_status(
            vps.id,
            job.snapshot,
            SnapshotStatus.AVAILABLE,
            only_from=SnapshotStatus.DELETING,
        )
