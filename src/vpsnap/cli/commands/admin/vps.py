"""``vpsnap admin vps``: the VPS inventory of every account (add, list, update, remove,
import-libvirt). What each command does is a service call; this module parses and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vpsnap.cli.commands.admin.common import (
    admin_options,
    fail,
    iso,
    load_settings,
    run_admin,
)
from vpsnap.cli.machine_options import machine_from_options
from vpsnap.cli.output import Column, field, print_result, show
from vpsnap.domain.errors import DomainError
from vpsnap.domain.model import Vps
from vpsnap.services.accounts import NewVps, VpsChange

VPS_COLUMNS = (
    Column("id", field("id")),
    Column("account", field("account")),
    Column("name", field("name")),
    Column("node", field("node")),
    Column("slots", field("snapshotSlots")),
    Column("status", field("serviceStatus")),
    Column("ip", field("primaryIp")),
    Column("disks", lambda r: " ".join(r["disks"])),
    Column("machine", field("machine"), wide=True),
    Column("created", field("createdAt"), wide=True),
)


def vps_document(vps: Vps, account: str) -> dict[str, Any]:
    machine = type(vps.machine).__name__ if vps.machine is not None else None
    return {
        "id": vps.id,
        "account": account,
        "name": vps.name,
        "node": vps.node,
        "snapshotSlots": vps.snapshot_slots,
        "serviceStatus": vps.service_status.value,
        "primaryIp": vps.primary_ip,
        "disks": list(vps.disks),
        "machine": machine,
        "createdAt": iso(vps.created_at),
    }


@click.group(no_args_is_help=True)
def group() -> None:
    """The VPS inventory of every account."""


@group.command("add")
@click.option("--account", required=True, help="Account name.")
@click.option("--name", required=True, help="VPS name, unique in the account.")
@click.option(
    "--disk",
    "disks",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="qcow2 disk image; repeat for more disks.",
)
@click.option("--slots", type=click.IntRange(0, 1000), required=True, help="Snapshot slots.")
@click.option("--node", help="Hypervisor node (default: this one's, VPSNAP_NODE).")
@click.option("--primary-ip", help="Its primary IP address.")
@click.option(
    "--memory-mib", type=click.IntRange(min=16), help="A VM vpsnap starts and supervises: its RAM."
)
@click.option("--cpus", type=click.IntRange(1, 256), help="vCPUs of that VM (default 1).")
@click.option(
    "--qemu-arg", multiple=True, help="Extra qemu-system argument of that VM; repeatable."
)
@click.option(
    "--qmp-socket",
    type=click.Path(path_type=Path),
    help="A VM someone else runs: its QMP socket (attach).",
)
@click.option(
    "--guest-agent-socket", type=click.Path(path_type=Path), help="That VM's guest-agent socket."
)
@admin_options
def add(
    account: str,
    name: str,
    disks: tuple[Path, ...],
    slots: int,
    node: str | None,
    primary_ip: str | None,
    memory_mib: int | None,
    cpus: int | None,
    qemu_arg: tuple[str, ...],
    qmp_socket: Path | None,
    guest_agent_socket: Path | None,
    data_dir: Path | None,
) -> None:
    """Register a VPS whose disks are qcow2 images on this node.

    Without --memory-mib or --qmp-socket it is disk images only (always stopped; snapshots
    with qemu-img). docs/vms.md explains managed and attached VMs.
    """
    settings = load_settings(data_dir=data_dir)
    try:
        machine = machine_from_options(
            memory_mib=memory_mib,
            cpus=cpus,
            qemu_args=qemu_arg,
            qmp_socket=qmp_socket,
            guest_agent_socket=guest_agent_socket,
        )
    except DomainError as exc:
        click.echo(f"error: {exc.detail}", err=True)
        raise SystemExit(2) from None
    new = NewVps(
        account_name=account,
        name=name,
        disks=tuple(str(d) for d in disks),
        snapshot_slots=slots,
        node=node or settings.node,
        primary_ip=primary_ip,
        machine=machine,
    )
    vps = run_admin(settings, lambda rt: rt.services.accounts.register_vps(new))
    if not print_result(vps_document(vps, account)):
        click.echo(f"added {vps.name} ({vps.id})")


@group.command("list")
@click.option("--account", help="Only this account's VPSes.")
@admin_options
def list_(account: str | None, data_dir: Path | None) -> None:
    """Every VPS of every account; ids and disk paths are never shortened (--wide adds the
    machine kind and the creation time)."""
    rows = run_admin(load_settings(data_dir=data_dir), lambda rt: rt.services.accounts.list_vps())
    data = [vps_document(v, a) for v, a in rows if account is None or a == account]
    show({"data": data}, data, VPS_COLUMNS)


@group.command("update")
@click.argument("vps_id", metavar="VPS_ID")
@click.option("--name", help="New name (unique in the account).")
@click.option("--slots", type=click.IntRange(0, 1000), help="Snapshot slots (no billing).")
@click.option("--ip", "primary_ip", help="New primary IP address.")
@click.option("--no-ip", is_flag=True, default=False, help="Remove the primary IP.")
@click.option(
    "--disk",
    "disks",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Replace the disks (all of them; repeat for more). Refused while it has snapshots.",
)
@click.option("--node", help="Move it to another hypervisor node.")
@admin_options
def update(
    vps_id: str,
    name: str | None,
    slots: int | None,
    primary_ip: str | None,
    no_ip: bool,
    disks: tuple[Path, ...],
    node: str | None,
    data_dir: Path | None,
) -> None:
    """Change a VPS: name, slots, primary IP, disks, node. Slots below the snapshots that
    hold one are refused (it says which to delete)."""
    if primary_ip and no_ip:
        click.echo("error: choose one: --ip ADDRESS or --no-ip", err=True)
        raise SystemExit(2)
    change = VpsChange(
        name=name,
        snapshot_slots=slots,
        primary_ip=primary_ip,
        clear_primary_ip=no_ip,
        disks=tuple(str(d) for d in disks) or None,
        node=node,
    )
    if change == VpsChange():
        click.echo(
            "error: nothing to change: give --name, --slots, --ip, --disk or --node", err=True
        )
        raise SystemExit(2)

    async def action(rt: Any) -> tuple[Vps, str]:
        await rt.services.accounts.update_vps(vps_id, change)
        found: tuple[Vps, str] = await rt.services.accounts.get_vps(vps_id)
        return found

    vps, account = run_admin(load_settings(data_dir=data_dir), action)
    if not print_result(vps_document(vps, account)):
        click.echo(f"updated {vps.name} ({vps.id})")


@group.command("remove")
@click.argument("vps_id", metavar="VPS_ID")
@click.option("-y", "--yes", is_flag=True, default=False, help="Do not ask for confirmation.")
@admin_options
def remove(vps_id: str, yes: bool, data_dir: Path | None) -> None:
    """Remove a VPS from vpsnap (asks first unless --yes). Refused while it has jobs queued
    or running. Its disks, and the snapshots inside them, are left as they are and listed."""
    from vpsnap.cli.output import confirm, refused  # noqa: PLC0415

    settings = load_settings(data_dir=data_dir)
    vps, account = run_admin(settings, lambda rt: rt.services.accounts.get_vps(vps_id))
    question = (
        f"Remove {vps.name} ({vps.id}, account {account}) from vpsnap? Its disks stay on "
        "disk; its snapshot records and jobs are deleted."
    )
    if not confirm(question, yes=yes):
        raise refused("remove")
    removed = run_admin(settings, lambda rt: rt.services.accounts.remove_vps(vps_id))
    left = [{"name": s.name, "status": s.status.value} for s in removed.snapshots_left]
    document = {**vps_document(removed.vps, removed.account_name), "snapshotsLeftOnDisk": left}
    if print_result(document):
        return
    click.echo(f"removed {removed.vps.name} ({removed.vps.id})")
    if left:
        click.echo(
            f"{len(left)} snapshot(s) stay inside its disks ({', '.join(removed.vps.disks)}): "
            f"{', '.join(s['name'] for s in left)}; delete them with "
            "`qemu-img snapshot -d NAME DISK` if they are not wanted"
        )


@group.command("import-libvirt")
@click.option("--account", required=True, help="Account the VPSes belong to.")
@click.option("--uri", default="qemu:///system", show_default=True, help="libvirt connection URI.")
@click.option(
    "--slots", type=click.IntRange(0, 1000), default=1, show_default=True, help="Slots per VPS."
)
@click.option(
    "--domain",
    "domains",
    multiple=True,
    help="Only this domain (name or UUID); repeat for more. Default: all.",
)
@click.option("--node", help="Hypervisor node.")
@admin_options
def import_libvirt(
    account: str,
    uri: str,
    slots: int,
    domains: tuple[str, ...],
    node: str | None,
    data_dir: Path | None,
) -> None:
    """Add existing libvirt domains as VPSes (name = domain name, disks = its qcow2 disks).

    Run it again after defining new domains: those already imported are skipped.
    """
    from vpsnap.domain.errors import HypervisorError  # noqa: PLC0415
    from vpsnap.services.libvirt_import import import_domains  # noqa: PLC0415

    try:
        from vpsnap.drivers.libvirt import LibvirtDriver  # noqa: PLC0415 - optional extra
    except ImportError:
        raise fail(
            HypervisorError(
                "libvirt-python is not installed: install vpsnap with its libvirt extra "
                "(pip install 'vpsnap[libvirt]'); see docs/libvirt.md"
            )
        ) from None
    settings = load_settings(data_dir=data_dir)

    async def action(rt: Any) -> Any:
        driver = LibvirtDriver()
        try:
            return await import_domains(
                rt.services.accounts,
                rt.store,
                driver,
                uri=uri,
                account=account,
                slots=slots,
                node=node or settings.node,
                domains=domains,
            )
        finally:
            driver.close()

    rows = run_admin(settings, action)
    data = [
        {"domain": r.domain, "result": r.outcome, "vpsId": r.vps_id or None, "detail": r.detail}
        for r in rows
    ]
    if not data and not print_result({"uri": uri, "data": []}):
        click.echo(f"no domains on {uri}")
        return
    columns = (
        Column("domain", field("domain")),
        Column("result", field("result")),
        Column("vps", field("vpsId")),
        Column("detail", lambda r: str(r["detail"]).replace("\n", " ")),
    )
    show({"uri": uri, "data": data}, data, columns, title=uri)
