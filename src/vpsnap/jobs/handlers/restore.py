"""``snapshot.restore``: roll every disk back to the snapshot, keeping the power state.

The power state the VM had is recorded in the journal before anything is touched, so a re-run
after a crash (say, between stopping the VM and starting it again on the restored disks) ends
in the state the user had, not in whatever the crash left.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from vpsnap.domain.errors import SnapshotNotFound
from vpsnap.domain.job_types import restore_payload
from vpsnap.domain.model import (
    Job,
    PowerAction,
    PowerState,
    Snapshot,
    SnapshotStatus,
    VmFacts,
    Vps,
)
from vpsnap.domain.ports import HypervisorDriver, Transaction
from vpsnap.jobs.handlers.ownership import find_point, is_the_recorded_one
from vpsnap.jobs.journal import JobJournal
from vpsnap.jobs.observer import VM_FACTS, observe_vm

POWER_STATE_BEFORE = "powerStateBefore"


async def _move(
    tx: Transaction, job: Job, vps: Vps, old: SnapshotStatus, new: SnapshotStatus
) -> None:
    # Conditional: a delete accepted behind this restore has already made the snapshot
    # `deleting` (and given its slot back); the restore must not undo that.
    await tx.set_snapshot_status(vps.id, job.snapshot, new, only_from=old)


class RestoreSnapshotHandler:
    async def prepare(
        self, tx: Transaction, job: Job, vps: Vps, snapshots: Sequence[Snapshot]
    ) -> None:
        await _move(tx, job, vps, SnapshotStatus.AVAILABLE, SnapshotStatus.RESTORING)

    async def perform(
        self, driver: HypervisorDriver, job: Job, vps: Vps, journal: JobJournal
    ) -> dict[str, Any]:
        name = job.snapshot
        recorded = journal.facts.get(POWER_STATE_BEFORE)
        if isinstance(recorded, str):
            before = PowerState(recorded)
        else:
            before = await driver.power_state(vps)
            await journal.record(**{POWER_STATE_BEFORE: before.value})
        row = await journal.snapshot(vps.id, name)
        point = find_point(await driver.list_restore_points(vps), name)
        if (
            point is not None
            and row is not None
            and not is_the_recorded_one(point, row.disk_created_at)
        ):
            # Rolling back to someone else's snapshot of the same name would be wrong data.
            raise SnapshotNotFound(
                f"Snapshot {name!r} of {vps.name} is no longer on its disks (a different "
                "snapshot carries its name now); it can only be deleted."
            )
        # Applying a snapshot is idempotent: a re-run rolls back to the same point again.
        outcome = await driver.restore_snapshot(
            vps,
            name,
            # The VM configuration the snapshot's RAM state fits, recorded with it and put in
            # the job when the restore was asked for (issue 9, kind 3).
            recorded=restore_payload(job).vm_config,
        )
        after = outcome.power_state_after
        if before is PowerState.RUNNING and after is PowerState.STOPPED:
            # An earlier attempt stopped the VM and died before starting it again.
            after = (await driver.change_power(vps, PowerAction.START)).power_state_after
        facts = await observe_vm(driver, vps, after)
        return {
            "powerStateBefore": before.value,
            "powerStateAfter": after.value,
            VM_FACTS: facts.to_json() if facts is not None else None,
        }

    async def succeed(
        self, tx: Transaction, job: Job, vps: Vps, facts: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        name = job.snapshot
        await _move(tx, job, vps, SnapshotStatus.RESTORING, SnapshotStatus.AVAILABLE)
        # The restored snapshot becomes the parent of the next one.
        await tx.set_current_snapshot(vps.id, name)
        await tx.record_power_state(vps.id, PowerState(facts["powerStateAfter"]), now)
        await tx.record_vm_facts(vps.id, VmFacts.from_json(facts.get(VM_FACTS)))
        return {"name": name, **{k: v for k, v in facts.items() if k != VM_FACTS}}

    async def undo(self, tx: Transaction, job: Job, vps: Vps) -> None:
        await _move(tx, job, vps, SnapshotStatus.RESTORING, SnapshotStatus.AVAILABLE)
