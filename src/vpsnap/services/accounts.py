"""Operator use cases: accounts and the VPS inventory (used by `vpsnap admin`, the demo, and
later the operator dashboard). The CLI only parses, calls these and prints."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vpsnap.domain.audit import Actor, AuditAction, Target
from vpsnap.domain.clock import Clock
from vpsnap.domain.disks import DiskFile, DiskOwner, repeated
from vpsnap.domain.errors import (
    Conflict,
    DiskAlreadyRegistered,
    FieldError,
    InvalidRequest,
    NotFound,
    SnapshotSlotsInUse,
    VpsNotFound,
)
from vpsnap.domain.ids import new_id
from vpsnap.domain.model import (
    Account,
    Billing,
    Machine,
    OperatingSystem,
    Resources,
    ServiceStatus,
    Snapshot,
    Vps,
)
from vpsnap.domain.ports import DiskInspector, Store, VpsFilter
from vpsnap.events.audit import AuditTrail, operator_actor

MAX_SLOTS = 1000


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
class VpsChange:
    """What ``update_vps`` changes; None leaves a field as it is."""

    name: str | None = None
    snapshot_slots: int | None = None
    primary_ip: str | None = None
    clear_primary_ip: bool = False
    disks: tuple[str, ...] | None = None
    node: str | None = None


@dataclass(frozen=True, slots=True)
class AccountListing:
    account: Account
    vps_count: int
    active_keys: int


@dataclass(frozen=True, slots=True)
class RemovedVps:
    """A removed VPS: ``snapshots_left`` are the snapshots vpsnap had recorded, which stay
    inside ``vps.disks`` (vpsnap deletes on disk only through jobs, and no job runs now)."""

    vps: Vps
    account_name: str
    snapshots_left: tuple[Snapshot, ...]


@dataclass(frozen=True, slots=True)
class AccountService:
    store: Store
    clock: Clock
    disks: DiskInspector | None = None
    """Checks disk files given by an operator (``register_vps``, ``update_vps``); None: only
    that they exist."""

    async def list_accounts(self) -> list[AccountListing]:
        """Every account with its number of VPSes and of usable (not revoked or expired) keys."""
        now = self.clock.now()
        async with self.store.transaction(read_only=True) as tx:
            accounts = await tx.list_accounts()
            keys = await tx.list_api_keys(None)
            vps_counts: dict[str, int] = {}
            after: str | None = None
            while True:
                page = await tx.list_vps(None, VpsFilter(), after, 500)
                for item in page:
                    vps_counts[item.account_id] = vps_counts.get(item.account_id, 0) + 1
                if len(page) < 500:
                    break
                after = page[-1].id
        usable: dict[str, int] = {}
        for key in keys:
            if key.is_usable(now):
                usable[key.account_id] = usable.get(key.account_id, 0) + 1
        return [
            AccountListing(a, vps_counts.get(a.id, 0), usable.get(a.id, 0))
            for a in sorted(accounts, key=lambda a: a.created_at)
        ]

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
        """Register a VPS; every command that registers disks comes through here.

        Raises ``NotFound`` for an unknown account, ``Conflict`` for a taken name, and
        ``DiskAlreadyRegistered`` when a disk file is given twice or already belongs to a VPS
        on the node, whatever the account (compared by real path and by device and inode,
        ``identify_disks``); its detail names that VPS, for the operator. Audited as
        ``vps.add`` by ``actor`` (default: the OS user running this process).
        """
        actor = actor or operator_actor()
        async with self.audit.refusals(
            actor, AuditAction.VPS_ADD, account_id=None, target=Target("vps", new.name)
        ):
            return await self._add_vps(new, actor)

    async def _add_vps(self, new: NewVps, actor: Actor) -> Vps:
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

    async def register_vps(self, new: NewVps) -> Vps:
        """``add_vps`` for an operator's input: each disk must be an existing qcow2 file
        (absolute paths are stored: the worker may run elsewhere than the command)."""
        disks = await self.check_disk_files(new.disks)
        return await self.add_vps(dataclasses.replace(new, disks=disks))

    async def check_disk_files(self, disks: tuple[str, ...]) -> tuple[str, ...]:
        """The disks as absolute paths; ``InvalidRequest`` naming the first that does not exist,
        is not a file, or is not qcow2 (internal snapshots need qcow2), with how to convert."""
        if not disks:
            raise _invalid("a VPS needs at least one disk", "/disks", "missing_required")
        paths = []
        for disk in disks:
            path = await asyncio.to_thread(Path(disk).resolve)
            if not await asyncio.to_thread(path.is_file):
                raise _invalid(f"disk {disk} does not exist (or is not a file)", "/disks")
            if self.disks is not None:
                found = await self.disks.detect_format(str(path))
                if found != "qcow2":
                    raise _invalid(
                        f"disk {disk} is {found}, not qcow2: internal snapshots need qcow2 "
                        f"(convert with `qemu-img convert -O qcow2 {disk} {disk}.qcow2`)",
                        "/disks",
                    )
            paths.append(str(path))
        if len(set(paths)) != len(paths):
            raise _invalid(f"a disk is given twice: {', '.join(disks)}", "/disks")
        return tuple(paths)

    async def get_vps(self, vps_id: str) -> tuple[Vps, str]:
        """One VPS (any account) with its account's name; ``VpsNotFound`` when there is none."""
        async with self.store.transaction(read_only=True) as tx:
            vps = await tx.get_vps(vps_id)
            if vps is None:
                raise VpsNotFound(f"No VPS with id {vps_id!r}.")
            names = {a.id: a.name for a in await tx.list_accounts()}
        return vps, names.get(vps.account_id, "?")

    async def update_vps(
        self, vps_id: str, change: VpsChange, *, actor: Actor | None = None
    ) -> Vps:
        """Change what the operator owns of a VPS: name, slots, primary IP, disks, node.

        Slots below the snapshots that hold one raise ``SnapshotSlotsInUse`` (the operator
        sets slots directly: no price, no billing webhook). New disks are checked like
        ``register_vps``'s and refused while the VPS has snapshots (they live inside the old
        disks) or jobs (a job works on the old disks). Audited as ``vps.update`` by ``actor``
        (default: the OS user), with the fields that changed.
        """
        actor = actor or operator_actor()
        async with self.audit.refusals(
            actor, AuditAction.VPS_UPDATE, account_id=None, target=Target("vps", vps_id)
        ):
            return await self._update_vps(vps_id, change, actor)

    async def _update_vps(self, vps_id: str, change: VpsChange, actor: Actor) -> Vps:
        _check_change(change)
        disks = None if change.disks is None else await self.check_disk_files(change.disks)
        async with self.store.transaction() as tx:
            vps = await tx.get_vps(vps_id, lock=True)
            if vps is None:
                raise VpsNotFound(f"No VPS with id {vps_id!r}.")
            snapshots = await tx.list_snapshots(vps_id)
            updated = _with_fields(vps, change)
            if change.snapshot_slots is not None:
                _check_slots(vps, snapshots, change.snapshot_slots)
                updated = dataclasses.replace(updated, snapshot_slots=change.snapshot_slots)
            if disks is not None and disks != vps.disks:
                if await tx.has_active_job(vps_id):
                    raise Conflict(
                        f"{vps.name} has jobs queued or running on its disks: wait for them, "
                        "then change the disks"
                    )
                if snapshots:
                    raise Conflict(
                        f"{vps.name} has {len(snapshots)} snapshot(s) inside its current disks "
                        f"({', '.join(s.name for s in snapshots)}): delete them first, then "
                        "change the disks"
                    )
                updated = dataclasses.replace(updated, disks=disks)
            files = None
            if updated.disks != vps.disks or updated.node != vps.node:
                # One disk file belongs to one VPS once (how-snapshots-work.md, "One disk, one
                # VPS"): the same checks as add_vps, against every other VPS of the node.
                files = await identify_disks(updated.disks)
                twice = repeated(zip(updated.disks, files, strict=True))
                if twice is not None:
                    raise DiskAlreadyRegistered(
                        f"disk {twice[0]} is given twice: a VPS has each disk file once"
                    )
                others = [
                    o for o in await tx.disk_owners(updated.node, files) if o.vps_id != vps_id
                ]
                if others:
                    owner = others[0]
                    raise DiskAlreadyRegistered(
                        f"disk {owner.disk.path} already belongs to VPS {owner.vps_name} "
                        f"({owner.vps_id}) of account {owner.account_name}: one disk file "
                        "belongs to one VPS"
                    )
            await tx.update_vps(updated, files)
            await self.audit.record(
                tx,
                actor,
                AuditAction.VPS_UPDATE,
                account_id=vps.account_id,
                target=Target("vps", vps_id),
                vps_id=vps_id,
                details=_changed_fields(vps, updated),
            )
        return updated

    async def remove_vps(self, vps_id: str, *, actor: Actor | None = None) -> RemovedVps:
        """Remove a VPS from vpsnap: its row, snapshot records, schedule and finished jobs.

        Refused (``Conflict``) while it has jobs queued or running. Nothing on disk is touched:
        the snapshots vpsnap made stay inside the disk images and are returned, so that the
        operator can delete them (``qemu-img snapshot -d``) or keep them. Audited as
        ``vps.remove`` by ``actor`` (default: the OS user); the trail keeps the VPS's id.
        """
        actor = actor or operator_actor()
        target = Target("vps", vps_id)
        action = AuditAction.VPS_REMOVE
        async with self.audit.refusals(actor, action, account_id=None, target=target):
            return await self._remove_vps(vps_id, actor)

    async def _remove_vps(self, vps_id: str, actor: Actor) -> RemovedVps:
        async with self.store.transaction() as tx:
            vps = await tx.get_vps(vps_id, lock=True)
            if vps is None:
                raise VpsNotFound(f"No VPS with id {vps_id!r}.")
            if await tx.has_active_job(vps_id):
                raise Conflict(
                    f"{vps.name} has jobs queued or running: wait for them to finish "
                    "(vpsnap jobs list --vps ID), then remove it"
                )
            names = {a.id: a.name for a in await tx.list_accounts()}
            snapshots = tuple(await tx.list_snapshots(vps_id))
            await tx.remove_vps(vps_id)
            await self.audit.record(
                tx,
                actor,
                AuditAction.VPS_REMOVE,
                account_id=vps.account_id,
                target=Target("vps", vps_id),
                vps_id=vps_id,
                details={"name": vps.name, "snapshotsLeftOnDisk": [s.name for s in snapshots]},
            )
        return RemovedVps(vps, names.get(vps.account_id, "?"), snapshots)

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


def _invalid(detail: str, pointer: str, code: str = "invalid_format") -> InvalidRequest:
    return InvalidRequest(detail, [FieldError(pointer, detail, code)])


def _check_change(change: VpsChange) -> None:
    if change.primary_ip is not None:
        try:
            ipaddress.ip_address(change.primary_ip)
        except ValueError:
            raise _invalid(f"{change.primary_ip!r} is not an IP address", "/primaryIp") from None
    if change.snapshot_slots is not None and not 0 <= change.snapshot_slots <= MAX_SLOTS:
        raise _invalid(f"slots must be between 0 and {MAX_SLOTS}", "/slots", "out_of_range")
    if change.name is not None and not change.name.strip():
        raise _invalid("a VPS name cannot be empty", "/name")


def _with_fields(vps: Vps, change: VpsChange) -> Vps:
    updated = vps
    if change.name is not None:
        updated = dataclasses.replace(updated, name=change.name)
    if change.node is not None:
        updated = dataclasses.replace(updated, node=change.node)
    if change.clear_primary_ip:
        updated = dataclasses.replace(updated, primary_ip=None)
    elif change.primary_ip is not None:
        updated = dataclasses.replace(updated, primary_ip=change.primary_ip)
    return updated


def _check_slots(vps: Vps, snapshots: list[Snapshot], slots: int) -> None:
    in_use = [s.name for s in snapshots if s.holds_slot]
    if slots < len(in_use):
        raise SnapshotSlotsInUse(
            f"{vps.name} has {len(in_use)} snapshot(s) holding a slot ({', '.join(in_use)}): "
            f"delete {len(in_use) - slots} first, or keep at least {len(in_use)} slots",
            extensions={"snapshotsInUse": in_use},
        )


def _changed_fields(before: Vps, after: Vps) -> dict[str, object]:
    """What an update changed, as ``{field: {"from", "to"}}`` for the audit trail."""
    changes: dict[str, object] = {}
    for name in ("name", "snapshot_slots", "primary_ip", "disks", "node"):
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            changes[name] = {
                "from": list(old) if isinstance(old, tuple) else old,
                "to": list(new) if isinstance(new, tuple) else new,
            }
    return changes
