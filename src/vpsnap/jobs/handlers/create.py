"""``snapshot.create``: take the snapshot on every disk, then mark it available."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from vpsnap.domain.errors import SnapshotLimitReached, SnapshotNameTaken
from vpsnap.domain.model import Consistency, Job, Vps
from vpsnap.domain.ports import (
    HypervisorDriver,
    RestorePoint,
    SnapshotRequest,
    TakenSnapshot,
    Transaction,
)
from vpsnap.domain.rules import slot_usage

# Disk timestamps come from the hypervisor host's clock, job timestamps from the worker's; the
# same host in practice, so a second of tolerance is plenty.
_CLOCK_TOLERANCE = timedelta(seconds=1)
_RERUN_REASON = (
    "the job was re-run after its worker stopped, and a filesystem freeze leaves no trace on "
    "the disks to prove it"
)


class CreateSnapshotHandler:
    async def prepare(self, tx: Transaction, job: Job, vps: Vps) -> None:
        # The slot was checked when the create was accepted; check again now that it runs. A
        # delete queued before it frees a slot on acceptance, and if that delete failed, its
        # snapshot took the slot back: this create must then not push the VPS over its slots.
        usage = slot_usage(vps, await tx.list_snapshots(vps.id))
        if usage.used > usage.total:
            raise SnapshotLimitReached(
                f"All {usage.total} snapshot slots of {vps.name} are in use: a delete queued "
                "before this snapshot failed, so its slot was not freed.",
                extensions={"totalSnapshots": usage.total, "usedSnapshots": usage.used - 1},
            )

    async def perform(self, driver: HypervisorDriver, job: Job, vps: Vps) -> dict[str, Any]:
        name = job.snapshot_name or ""
        if job.attempts > 1:
            # A re-run after a worker died: ask the hypervisor what the earlier attempt left.
            present = {p.name: p for p in await driver.list_restore_points(vps)}
            existing = present.get(name)
            if existing is not None and not _made_by(existing, job):
                raise SnapshotNameTaken(
                    f"A snapshot named {name!r} already exists on the disks of {vps.name} "
                    "but was not made by vpsnap; choose another name."
                )
            if existing is not None and set(existing.disks) == set(vps.disks):
                # The earlier attempt finished on the hypervisor before its worker died. RAM
                # state shows on disk; a filesystem freeze leaves no trace, so without RAM
                # only crash consistency can be claimed.
                with_memory = existing.vm_state_size > 0
                return {
                    "consistency": (Consistency.MEMORY if with_memory else Consistency.CRASH).value,
                    "includesMemoryState": with_memory,
                    "consistencyReason": None if with_memory else _RERUN_REASON,
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
            **_quiesce_facts(taken),
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
            consistency_reason=facts.get("consistencyReason"),
        )
        await tx.set_current_snapshot(vps.id, name)
        # What the guest agent did, when a freeze was tried, is reported with the job
        # (docs/api.md, "Snapshots"); the reason is on the snapshot itself.
        return {"name": name, **{k: facts[k] for k in _QUIESCE_RESULT if k in facts}}

    async def undo(self, tx: Transaction, job: Job, vps: Vps) -> None:
        # The slot is given back at once; the driver already left nothing on disk.
        await tx.remove_snapshot(vps.id, job.snapshot_name or "")


_QUIESCE_RESULT = ("freezeWindowMs", "guestThawed", "leftoverFreezeThawed")


def _quiesce_facts(taken: TakenSnapshot) -> dict[str, Any]:
    facts: dict[str, Any] = {"consistencyReason": taken.consistency_reason}
    if taken.freeze_window_ms is not None:
        facts["freezeWindowMs"] = taken.freeze_window_ms
        facts["guestThawed"] = bool(taken.thaw_confirmed)
    if taken.leftover_freeze_thawed:
        facts["leftoverFreezeThawed"] = True
    return facts


def _made_by(point: RestorePoint, job: Job) -> bool:
    """Whether a restore point was left by an earlier attempt of this job (not made before the
    job first started, e.g. by hand)."""
    if point.created_at is None or job.started_at is None:
        return False
    return point.created_at >= job.started_at - _CLOCK_TOLERANCE
