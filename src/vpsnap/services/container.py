"""The set of use-case services one process exposes (built by ``vpsnap.runtime``)."""

from __future__ import annotations

from dataclasses import dataclass

from vpsnap.domain.ports import HypervisorDriver, Store
from vpsnap.services.accounts import AccountService
from vpsnap.services.audit import AuditService
from vpsnap.services.capacity import CapacityService
from vpsnap.services.credentials import CredentialService
from vpsnap.services.idempotency import IdempotencyService
from vpsnap.services.inventory import InventoryService
from vpsnap.services.jobs import JobService
from vpsnap.services.nodes import NodeDirectory
from vpsnap.services.panel import PanelService
from vpsnap.services.power import PowerService
from vpsnap.services.sessions import SessionService
from vpsnap.services.snapshots import SnapshotService
from vpsnap.services.users import UserService
from vpsnap.services.webhooks import WebhookService


@dataclass(frozen=True, slots=True)
class Services:
    store: Store
    driver: HypervisorDriver | None
    """None in processes that never talk to a hypervisor (``vpsnap api``, ``scheduler``)."""
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
    nodes: NodeDirectory
    audit: AuditService
    webhooks: WebhookService

    async def readiness(self) -> dict[str, str]:
        """What /readyz reports: each dependency ``ok`` or the reason it is not."""
        checks: dict[str, str] = {}
        try:
            await self.store.ping()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        if self.driver is not None:
            try:
                await self.driver.probe()
                checks["hypervisor"] = "ok"
            except Exception as exc:
                checks["hypervisor"] = f"unavailable: {exc}"
        return checks
