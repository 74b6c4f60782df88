"""The set of use-case services one process exposes (built by ``vpsnap.runtime``)."""

from __future__ import annotations

from dataclasses import dataclass

from vpsnap.domain.ports import HypervisorDriver, Store
from vpsnap.services.accounts import AccountService
from vpsnap.services.capacity import CapacityService
from vpsnap.services.credentials import CredentialService
from vpsnap.services.idempotency import IdempotencyService
from vpsnap.services.inventory import InventoryService
from vpsnap.services.jobs import JobService
from vpsnap.services.panel import PanelService
from vpsnap.services.power import PowerService
from vpsnap.services.sessions import SessionService
from vpsnap.services.snapshots import SnapshotService
from vpsnap.services.users import UserService


@dataclass(frozen=True, slots=True)
class Services:
    store: Store
    driver: HypervisorDriver
    accounts: AccountService
    credentials: CredentialService
    inventory: InventoryService
    snapshots: SnapshotService
    jobs: JobService
    capacity: CapacityService
    idempotency: IdempotencyService
    power: PowerService
    # dashboard (issue 11)
    users: UserService
    sessions: SessionService
    panel: PanelService

    async def readiness(self) -> dict[str, str]:
        """What /readyz reports: each dependency ``ok`` or the reason it is not."""
        checks: dict[str, str] = {}
        try:
            await self.store.ping()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        try:
            await self.driver.probe()
            checks["hypervisor"] = "ok"
        except Exception as exc:
            checks["hypervisor"] = f"unavailable: {exc}"
        return checks
