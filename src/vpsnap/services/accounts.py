"""Operator use cases: accounts and the VPS inventory (used by `vpsnap admin` and the demo)."""

from __future__ import annotations

from dataclasses import dataclass

from vpsnap.domain.audit import Actor, AuditAction, Target
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import NotFound
from vpsnap.domain.ids import new_id
from vpsnap.domain.model import (
    Account,
    Billing,
    Machine,
    OperatingSystem,
    Resources,
    ServiceStatus,
    Vps,
)
from vpsnap.domain.ports import Store, VpsFilter
from vpsnap.events.audit import AuditTrail, operator_actor


@dataclass(frozen=True, slots=True)
class NewVps:
    account_name: str
    name: str
    disks: tuple[str, ...]
    snapshot_slots: int
    node: str = "local"
    primary_ip: str | None = None
    operating_system: OperatingSystem | None = None
    resources: Resources | None = None
    billing: Billing | None = None
    service_status: ServiceStatus = ServiceStatus.ACTIVE
    machine: Machine | None = None


@dataclass(frozen=True, slots=True)
class AccountService:
    store: Store
    clock: Clock

    @property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.store, self.clock)

    async def create_account(self, name: str, *, actor: Actor | None = None) -> Account:
        """Create an account; audited as ``account.create`` by ``actor`` (default: the OS user
        running this process, as for every operator action here)."""
        actor = actor or operator_actor()
        account = Account(id=new_id("acct"), name=name, created_at=self.clock.now())
        target = Target("account", account.id)
        action = AuditAction.ACCOUNT_CREATE
        async with (
            self.audit.refusals(actor, action, account_id=None, target=target),
            self.store.transaction() as tx,
        ):
            await tx.add_account(account)
            await self.audit.record(
                tx, actor, action, account_id=account.id, target=target, details={"name": name}
            )
        return account

    async def ensure_account(self, name: str) -> Account:
        async with self.store.transaction(read_only=True) as tx:
            existing = await tx.find_account_by_name(name)
        return existing or await self.create_account(name)

    async def add_vps(self, new: NewVps, *, actor: Actor | None = None) -> Vps:
        """Register a VPS; audited as ``vps.add`` by ``actor`` (default: the OS user)."""
        actor = actor or operator_actor()
        async with self.audit.refusals(
            actor, AuditAction.VPS_ADD, account_id=None, target=Target("vps", new.name)
        ):
            return await self._add_vps(new, actor)

    async def _add_vps(self, new: NewVps, actor: Actor) -> Vps:
        async with self.store.transaction() as tx:
            account = await tx.find_account_by_name(new.account_name)
            if account is None:
                raise NotFound(f"No account named {new.account_name!r}.")
            vps = Vps(
                id=new_id("vps"),
                account_id=account.id,
                name=new.name,
                node=new.node,
                disks=new.disks,
                snapshot_slots=new.snapshot_slots,
                service_status=new.service_status,
                created_at=self.clock.now(),
                primary_ip=new.primary_ip,
                operating_system=new.operating_system,
                resources=new.resources or Resources(1, 1.0, 0.0),
                billing=new.billing,
                machine=new.machine,
            )
            await tx.add_vps(vps)
            await self.audit.record(
                tx,
                actor,
                AuditAction.VPS_ADD,
                account_id=account.id,
                target=Target("vps", vps.id),
                vps_id=vps.id,
                details={"name": vps.name, "node": vps.node, "snapshotSlots": vps.snapshot_slots},
            )
        return vps

    async def find_account(self, name: str) -> Account | None:
        async with self.store.transaction(read_only=True) as tx:
            return await tx.find_account_by_name(name)

    async def find_vps(self, account_name: str, vps_name: str) -> Vps | None:
        async with self.store.transaction(read_only=True) as tx:
            account = await tx.find_account_by_name(account_name)
            if account is None:
                return None
            return await tx.find_vps_by_name(account.id, vps_name)

    async def list_vps(self) -> list[tuple[Vps, str]]:
        """Every VPS with its account's name, for the operator."""
        async with self.store.transaction(read_only=True) as tx:
            names = {a.id: a.name for a in await tx.list_accounts()}
            result: list[tuple[Vps, str]] = []
            after: str | None = None
            while True:
                page = await tx.list_vps(None, VpsFilter(), after, 500)
                result.extend((v, names.get(v.account_id, "?")) for v in page)
                if len(page) < 500:
                    return result
                after = page[-1].id
