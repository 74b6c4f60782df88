"""Importing existing libvirt domains as VPSes (``vpsnap admin vps import-libvirt``).

The domains are described by a ``DomainCatalog`` (the libvirt driver, wired by the caller), so
this module needs nothing of libvirt itself; what it decides (which domains can be VPSes, which
are imported already) is here, once, for the CLI and any later operator UI.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from vpsnap.domain.errors import Conflict, NotFound
from vpsnap.domain.model import LibvirtDomain, Resources
from vpsnap.domain.ports import Store
from vpsnap.services.accounts import AccountService, NewVps

_GIB = 1024**3


class DescribedDisk(Protocol):
    @property
    def target(self) -> str: ...
    @property
    def source(self) -> str | None: ...
    @property
    def format(self) -> str | None: ...


class DescribedDomain(Protocol):
    """What the import needs to know of a domain (``vpsnap.drivers.libvirt.DomainDescription``)."""

    @property
    def name(self) -> str: ...
    @property
    def uuid(self) -> str: ...
    @property
    def persistent(self) -> bool: ...
    @property
    def vcpus(self) -> int: ...
    @property
    def memory_mib(self) -> int: ...
    @property
    def capacity_bytes(self) -> int: ...
    @property
    def qcow2_disks(self) -> tuple[str, ...]: ...
    @property
    def unsnapshottable_disks(self) -> Sequence[DescribedDisk]: ...


class DomainCatalog(Protocol):
    async def describe_domains(
        self, uri: str, only: Iterable[str] = ()
    ) -> Sequence[DescribedDomain]: ...


@dataclass(frozen=True, slots=True)
class ImportRow:
    domain: str
    outcome: str  # "imported" | "skipped"
    vps_id: str
    detail: str


async def import_domains(
    accounts: AccountService,
    store: Store,
    catalog: DomainCatalog,
    *,
    uri: str,
    account: str,
    slots: int,
    node: str,
    domains: Sequence[str] = (),
) -> list[ImportRow]:
    """Add every domain on ``uri`` (or those named) as a VPS of ``account``; idempotent: a
    domain already imported (same URI and UUID, any account) is skipped, and so is one that
    cannot be a VPS (the row says why). ``NotFound`` when the account does not exist."""
    async with store.transaction(read_only=True) as tx:
        if await tx.find_account_by_name(account) is None:
            raise NotFound(f"No account named {account!r}.")

    found = await catalog.describe_domains(uri, domains)

    known: dict[tuple[str, str], str] = {}
    for vps, _ in await accounts.list_vps():
        if isinstance(vps.machine, LibvirtDomain):
            known[(vps.machine.uri, vps.machine.domain.lower())] = vps.id

    rows: list[ImportRow] = []
    for domain in found:
        existing = known.get((uri, domain.uuid.lower()))
        if existing is not None:
            rows.append(ImportRow(domain.name, "skipped", existing, "already imported"))
            continue
        refusal = refusal_for(domain)
        if refusal is not None:
            rows.append(ImportRow(domain.name, "skipped", "", refusal))
            continue
        new = NewVps(
            account_name=account,
            name=domain.name,
            disks=domain.qcow2_disks,
            snapshot_slots=slots,
            node=node,
            resources=Resources(
                cpu_cores=domain.vcpus,
                memory_gb=round(domain.memory_mib / 1024, 2),
                storage_gb=round(domain.capacity_bytes / _GIB, 2),
            ),
            # The UUID, not the name: a renamed domain stays the same VPS.
            machine=LibvirtDomain(uri=uri, domain=domain.uuid),
        )
        try:
            vps = await accounts.add_vps(new)
        except Conflict as exc:
            # The service's checks, as for `vps add`: the name is taken in the account, or a
            # disk already belongs to a VPS (any account) or is given twice.
            rows.append(ImportRow(domain.name, "skipped", "", exc.detail))
            continue
        rows.append(ImportRow(domain.name, "imported", vps.id, "\n".join(domain.qcow2_disks)))
    return rows


def refusal_for(domain: DescribedDomain) -> str | None:
    """Why the domain cannot be a vpsnap VPS, or None."""
    if not domain.persistent:
        return "transient domain: it disappears when it stops (define it with virsh define)"
    if not domain.qcow2_disks:
        return "no writable qcow2 disk: internal snapshots need qcow2"
    if domain.unsnapshottable_disks:
        # libvirt refuses an internal snapshot unless it covers every writable disk.
        listed = ", ".join(
            f"{d.target} ({d.format or 'unknown format'}{'' if d.source else ', not a local file'})"
            for d in domain.unsnapshottable_disks
        )
        return f"disks an internal snapshot cannot cover: {listed}"
    return None
