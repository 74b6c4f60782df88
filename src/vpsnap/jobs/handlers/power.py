"""``vps.power``: start, shut down, stop, restart or reset the VM.

The power state the action led to is recorded with the job's end (the API serves stored,
observed power states). Every action is idempotent at the driver (starting a running VM
succeeds), so a re-run is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from vpsnap.domain.job_types import power_payload
from vpsnap.domain.model import Job, PowerState, Snapshot, VmFacts, Vps
from vpsnap.domain.ports import HypervisorDriver, Transaction
from vpsnap.jobs.journal import JobJournal
from vpsnap.jobs.observer import VM_FACTS, observe_vm


class PowerHandler:
    async def prepare(
        self, tx: Transaction, job: Job, vps: Vps, snapshots: Sequence[Snapshot]
    ) -> None:
        return None

    async def perform(
        self, driver: HypervisorDriver, job: Job, vps: Vps, journal: JobJournal
    ) -> dict[str, Any]:
        payload = power_payload(job)
        action = payload.action
        outcome = await driver.change_power(vps, action, force=payload.force)
        facts = await observe_vm(driver, vps, outcome.power_state_after)
        return {
            "action": action.value,
            "powerStateBefore": outcome.power_state_before.value,
            "powerStateAfter": outcome.power_state_after.value,
            VM_FACTS: facts.to_json() if facts is not None else None,
        }

    async def succeed(
        self, tx: Transaction, job: Job, vps: Vps, facts: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        # The state the action led to, as of its end: served by the API from now on.
        await tx.record_power_state(vps.id, PowerState(facts["powerStateAfter"]), now)
        await tx.record_vm_facts(vps.id, VmFacts.from_json(facts.get(VM_FACTS)))
        return {k: v for k, v in facts.items() if k != VM_FACTS}

    async def undo(self, tx: Transaction, job: Job, vps: Vps) -> None:
        return None
