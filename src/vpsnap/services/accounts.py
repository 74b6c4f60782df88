"""Operator use cases: accounts and the VPS inventory (used by `vpsnap admin` and the demo)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vpsnap.domain.clock import Clock
from vpsnap.domain.disks import DiskFile, DiskOwner, repeated
from vpsnap.domain.errors import DiskAlreadyRegistered, NotFound
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


async def identify_disks(paths: Sequence[str]) -> tuple[DiskFile, ...]:
    """Each disk as the store compares it: its real path (symlinks and ``..`` resolved,
    relative paths taken from the current directory) and, when the file exists here, its
    device and inode, which also unmask a hard link. A file that cannot be read here (a
    remote libvirt host's disk, the fake driver's) is compared by its real path alone."""

    def identify(path: str) -> DiskFile:
        real = Path(path).resolve()
        try:
            info = real.stat()
        except OSError:
            return DiskFile(str(real))
        return DiskFile(str(real), f"{info.st_dev}:{info.st_ino}")

    return tuple(await asyncio.to_thread(lambda: [identify(p) for p in paths]))


def _owned_detail(new: NewVps, files: Sequence[DiskFile], owner: DiskOwner) -> str:
    given = next(
        (p for p, f in zip(new.disks, files, strict=True) if f.same_file(owner.disk)),
        owner.disk.path,
    )
    alias = "" if owner.disk.path == str(Path(given).resolve()) else f" (as {owner.disk.path})"
    return (
        f"disk {given} already belongs to VPS {owner.vps_name} ({owner.vps_id}) of account "
        f"{owner.account_name}{alias}: one disk file belongs to one VPS"
    )


@dataclass(frozen=True, slots=True)
class AccountService:
    store: Store
    clock: Clock

    async def create_account(self, name: str) -> Account:
        account = Account(id=new_id("acct"), name=name, created_at=self.clock.now())
        async with self.store.transaction() as tx:
            await tx.add_account(account)
        return account

    async def ensure_account(self, name: str) -> Account:
        async with self.store.transaction(read_only=True) as tx:
            existing = await tx.find_account_by_name(name)
        return existing or await self.create_account(name)

    async def add_vps(self, new: NewVps) -> Vps:
        """Register a VPS; every command that registers disks comes through here.

        Raises ``NotFound`` for an unknown account, ``Conflict`` for a taken name, and
        ``DiskAlreadyRegistered`` when a disk file is given twice or already belongs to a VPS
        on the node, whatever the account (compared by real path and by device and inode,
        ``identify_disks``); its detail names that VPS, for the operator.
        """
        files = await identify_disks(new.disks)
        twice = repeated(zip(new.disks, files, strict=True))
        if twice is not None:
            first, second = twice
            same = "" if first == second else f" ({second} is the same file as {first})"
            raise DiskAlreadyRegistered(
                f"disk {first} is given twice{same}: a VPS has each disk file once"
            )
        async with self.store.transaction() as tx:
            account = await tx.find_account_by_name(new.account_name)
            if account is None:
                raise NotFound(f"No account named {new.account_name!r}.")
            owners = await tx.disk_owners(new.node, files)
            if owners:
                raise DiskAlreadyRegistered(_owned_detail(new, files, owners[0]))
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
            await tx.add_vps(vps, files)
        return vps

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
