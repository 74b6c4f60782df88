"""``vps.power``: start, shut down, stop, restart or reset the VM.

The power state the action led to is recorded with the job's end (the API serves stored,
observed power states). Every action is idempotent at the driver (starting a running VM
succeeds), so a re-run is harmless.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vpsnap.domain.model import Job, PowerAction, PowerState, Vps
from vpsnap.domain.ports import HypervisorDriver, Transaction
from vpsnap.jobs.journal import JobJournal


class PowerHandler:
    async def prepare(self, tx: Transaction, job: Job, vps: Vps) -> None:
        return None

    async def perform(
        self, driver: HypervisorDriver, job: Job, vps: Vps, journal: JobJournal
    ) -> dict[str, Any]:
        action = PowerAction(job.payload["action"])
        outcome = await driver.change_power(vps, action, force=bool(job.payload.get("force")))
        return {
            "action": action.value,
            "powerStateBefore": outcome.power_state_before.value,
            "powerStateAfter": outcome.power_state_after.value,
        }

    async def succeed(
        self, tx: Transaction, job: Job, vps: Vps, facts: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        # The state the action led to, as of its end: served by the API from now on.
        await tx.record_power_state(vps.id, PowerState(facts["powerStateAfter"]), now)
        return facts

    async def undo(self, tx: Transaction, job: Job, vps: Vps) -> None:
        return None
