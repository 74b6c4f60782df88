"""``vpsnap admin vps import-libvirt``: register existing libvirt domains as VPSes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column, Table

from vpsnap.domain.errors import Conflict, HypervisorError, NotFound
from vpsnap.domain.model import LibvirtDomain, Resources, Vps
from vpsnap.services.accounts import NewVps

if TYPE_CHECKING:
    from vpsnap.drivers.libvirt import DomainDescription
    from vpsnap.runtime import Runtime

_GIB = 1024**3
_HEADERS = ("domain", "result", "vps", "disks / reason")


@dataclass(frozen=True, slots=True)
class ImportRow:
    domain: str
    outcome: str  # "imported" | "skipped"
    vps_id: str
    detail: str


async def import_domains(
    runtime: Runtime,
    *,
    uri: str,
    account: str,
    slots: int,
    node: str,
    domains: list[str],
) -> list[ImportRow]:
    """Add every domain on ``uri`` (or those named) as a VPS of ``account``; idempotent: a
    domain already imported (same URI and UUID, any account) is skipped."""
    try:
        from vpsnap.drivers.libvirt import LibvirtDriver  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise HypervisorError(
            "libvirt-python is not installed: install vpsnap with its libvirt extra "
            "(pip install 'vpsnap[libvirt]'); see docs/libvirt.md"
        ) from exc

    async with runtime.store.transaction(read_only=True) as tx:
        if await tx.find_account_by_name(account) is None:
            raise NotFound(f"No account named {account!r}.")

    driver = LibvirtDriver()
    try:
        found = await driver.describe_domains(uri, domains)
    finally:
        driver.close()

    known: dict[tuple[str, str], str] = {}
    for vps, _ in await runtime.services.accounts.list_vps():
        if isinstance(vps.machine, LibvirtDomain):
            known[(vps.machine.uri, vps.machine.domain.lower())] = vps.id

    rows: list[ImportRow] = []
    for domain in found:
        existing = known.get((uri, domain.uuid.lower()))
        if existing is not None:
            rows.append(ImportRow(domain.name, "skipped", existing, "already imported"))
            continue
        refusal = _refusal(domain)
        if refusal is not None:
            rows.append(ImportRow(domain.name, "skipped", "", refusal))
            continue
        try:
            vps = await _register(runtime, domain, uri=uri, account=account, slots=slots, node=node)
        except Conflict as exc:
            # The service's checks, as for `vps add`: the name is taken in the account, or a
            # disk already belongs to a VPS (any account) or is given twice.
            rows.append(ImportRow(domain.name, "skipped", "", exc.detail))
            continue
        rows.append(ImportRow(domain.name, "imported", vps.id, "\n".join(domain.qcow2_disks)))
    return rows


async def _register(
    runtime: Runtime, domain: DomainDescription, *, uri: str, account: str, slots: int, node: str
) -> Vps:
    return await runtime.services.accounts.add_vps(
        NewVps(
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
    )


def _refusal(domain: DomainDescription) -> str | None:
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


def import_libvirt(  # noqa: PLR0917 - Typer passes each option as a parameter
    account: Annotated[str, typer.Option(help="Account the VPSes belong to.")],
    uri: Annotated[str, typer.Option(help="libvirt connection URI.")] = "qemu:///system",
    slots: Annotated[int, typer.Option(min=0, max=1000, help="Snapshot slots per VPS.")] = 1,
    domain: Annotated[
        list[str] | None,
        typer.Option(help="Only this domain (name or UUID); repeat for more. Default: all."),
    ] = None,
    node: Annotated[str | None, typer.Option(help="Hypervisor node.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory (env VPSNAP_DATA_DIR).")
    ] = None,
) -> None:
    """Add existing libvirt domains as VPSes (name = domain name, disks = its qcow2 disks).

    Run it again after defining new domains: those already imported are skipped.
    """
    # cli.main imports this module to register the command, so its helpers are imported here.
    from vpsnap.cli.main import load_settings, out, run_admin  # noqa: PLC0415

    settings = load_settings(data_dir=data_dir)
    rows = run_admin(
        settings,
        lambda rt: import_domains(
            rt,
            uri=uri,
            account=account,
            slots=slots,
            node=node or settings.node,
            domains=domain or [],
        ),
    )
    if not rows:
        out.print(f"no domains on {uri}")
        return
    # Fold long values instead of cutting them: disk paths and reasons are the point here.
    table = Table(*(Column(h, overflow="fold") for h in _HEADERS), title=uri)
    for row in rows:
        table.add_row(row.domain, row.outcome, row.vps_id, row.detail)
    out.print(table)
