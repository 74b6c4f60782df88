"""``snapshot.create``: take the snapshot on every disk, then mark it available.

Ownership (``jobs.handlers.ownership``): the write intent is recorded after the name check and
right before the driver writes; a failure before it (name taken, disk locked, not qcow2) leaves
nothing vpsnap may delete, and a snapshot of the name found on disk without this job's intent
is someone else's, never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog

from vpsnap.domain.errors import DomainError, SnapshotLimitReached, SnapshotNameTaken
from vpsnap.domain.job_types import snapshot_payload
from vpsnap.domain.model import Consistency, IntentState, Job, Snapshot, VmConfig, Vps
from vpsnap.domain.ports import (
    HypervisorDriver,
    RestorePoint,
    SnapshotRequest,
    TakenSnapshot,
    Transaction,
)
from vpsnap.domain.rules import slot_usage
from vpsnap.jobs.handlers.ownership import clashing_point, find_point
from vpsnap.jobs.journal import JobJournal

log = structlog.get_logger("vpsnap.worker")

_RERUN_REASON = (
    "the job was re-run after its worker stopped, and a filesystem freeze leaves no trace on "
    "the disks to prove it"
)
# What the guest agent did, reported with the job when a freeze was tried (docs/api.md).
_QUIESCE_RESULT = ("freezeWindowMs", "guestThawed", "leftoverFreezeThawed")


class CreateSnapshotHandler:
    async def prepare(
        self, tx: Transaction, job: Job, vps: Vps, snapshots: Sequence[Snapshot]
    ) -> None:
        # The slot was checked when the create was accepted; check again now that it runs. A
        # delete queued before it frees a slot on acceptance, and if that delete failed, its
        # snapshot took the slot back: this create must then not push the VPS over its slots.
        usage = slot_usage(vps, snapshots)
        if usage.used > usage.total:
            raise SnapshotLimitReached(
                f"All {usage.total} snapshot slots of {vps.name} are in use: a delete queued "
                "before this snapshot failed, so its slot was not freed.",
                extensions={"totalSnapshots": usage.total, "usedSnapshots": usage.used - 1},
            )

    async def perform(
        self, driver: HypervisorDriver, job: Job, vps: Vps, journal: JobJournal
    ) -> dict[str, Any]:
        name = job.snapshot
        ours = journal.intended == name
        present = await driver.list_restore_points(vps)
        clash = clashing_point(present, name)
        if clash is not None and not (ours and clash.name == name):
            # Made by someone else (or by vpsnap under a row that no longer exists): reported,
            # never touched, and no intent was recorded for it.
            raise SnapshotNameTaken(
                f"A snapshot named {clash.name!r} already exists on the disks of {vps.name} "
                "but was not made by vpsnap; choose another name."
            )
        if clash is not None:
            # An earlier attempt of this job wrote it before its worker died.
            if set(clash.disks) == set(vps.disks):
                return _facts_of_existing(clash)
            # It died half-way through a multi-disk create: start again from nothing.
            await driver.delete_snapshot(vps, name)
        if not ours:
            await journal.open_intent(vps, name)
        payload = snapshot_payload(job)
        request = SnapshotRequest(
            name=name,
            include_memory_state=payload.include_memory_state,
            quiesce=payload.quiesce,
        )
        try:
            taken = await driver.create_snapshot(vps, request)
        except SnapshotNameTaken:
            # The driver checks the name before it writes anything, so whatever carries the
            # name now (made in the instant since the check above) is not ours.
            await journal.close_intent(name, IntentState.UNDONE)
            raise
        except DomainError:
            await settle_failed_write(driver, vps, name, journal)
            raise
        made = find_point(await driver.list_restore_points(vps), name)
        return {
            "consistency": taken.consistency.value,
            "includesMemoryState": taken.includes_memory_state,
            "diskCreatedAt": _iso(made.created_at) if made is not None else None,
            # What the RAM state fits, so a restore can refuse a changed VM up front (issue 9).
            "vmConfig": taken.vm_config.to_json() if taken.vm_config else None,
            **_quiesce_facts(taken),
        }

    async def succeed(
        self, tx: Transaction, job: Job, vps: Vps, facts: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        name = job.snapshot
        recorded = facts.get("diskCreatedAt")
        await tx.record_snapshot_taken(
            vps.id,
            name,
            Consistency(facts["consistency"]),
            includes_memory_state=bool(facts["includesMemoryState"]),
            parent_name=vps.current_snapshot,
            disk_created_at=datetime.fromisoformat(recorded) if recorded else None,
            vm_config=VmConfig.from_json(facts.get("vmConfig")),
            consistency_reason=facts.get("consistencyReason"),
        )
        await tx.set_current_snapshot(vps.id, name)
        # The row owns the snapshot now.
        await tx.close_write_intents(job.id, IntentState.DONE, now, name=name)
        # What the guest agent did, when a freeze was tried, is reported with the job
        # (docs/api.md, "Snapshots"); the reason is on the snapshot itself.
        return {"name": name, **{k: facts[k] for k in _QUIESCE_RESULT if k in facts}}

    async def undo(self, tx: Transaction, job: Job, vps: Vps) -> None:
        # The slot is given back at once. What the failed attempt may have left on disk is
        # covered by its write intent (settled in perform, or by reconciliation).
        await tx.remove_snapshot(vps.id, job.snapshot)


async def settle_failed_write(
    driver: HypervisorDriver, vps: Vps, name: str, journal: JobJournal
) -> None:
    """After a failed write (the driver has rolled back what it could): close the intent when
    nothing called ``name`` is left on any disk; otherwise leave it open, so reconciliation —
    which may delete only what an open intent covers — removes the leftover."""
    try:
        left = find_point(await driver.list_restore_points(vps), name)
    except DomainError as exc:
        log.warning(
            "write_intent_left_open",
            vps_id=vps.id,
            snapshot=name,
            reason=exc.log_detail or exc.detail,
        )
        return
    if left is None:
        await journal.close_intent(name, IntentState.UNDONE)
    else:
        log.warning(
            "write_intent_left_open",
            vps_id=vps.id,
            snapshot=name,
            reason="a leftover of the failed write is on disk; reconciliation removes it",
        )


def _facts_of_existing(point: RestorePoint) -> dict[str, Any]:
    # RAM state shows on disk; a filesystem freeze leaves no trace, so without RAM only crash
    # consistency can be claimed.
    with_memory = point.vm_state_size > 0
    return {
        "consistency": (Consistency.MEMORY if with_memory else Consistency.CRASH).value,
        "includesMemoryState": with_memory,
        "consistencyReason": None if with_memory else _RERUN_REASON,
        "diskCreatedAt": _iso(point.created_at),
    }


def _quiesce_facts(taken: TakenSnapshot) -> dict[str, Any]:
    facts: dict[str, Any] = {"consistencyReason": taken.consistency_reason}
    if taken.freeze_window_ms is not None:
        facts["freezeWindowMs"] = taken.freeze_window_ms
        facts["guestThawed"] = bool(taken.thaw_confirmed)
    if taken.leftover_freeze_thawed:
        facts["leftoverFreezeThawed"] = True
    return facts


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
