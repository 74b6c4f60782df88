"""``vpsnap``: run the server, administer accounts, keys and the VPS inventory."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from vpsnap.cli.client_commands import add_client_commands
from vpsnap.cli.libvirt_import import import_libvirt
from vpsnap.cli.vps_machine import machine_from_options
from vpsnap.domain.auth import parse_scopes
from vpsnap.domain.errors import DomainError
from vpsnap.runtime import Role, Runtime, qemu_img_for
from vpsnap.services.accounts import NewVps
from vpsnap.settings import Settings

app = typer.Typer(help="vpsnap: VPS snapshot control plane.", no_args_is_help=True)
admin = typer.Typer(help="Operator administration (works directly on the database).")
account_cmd = typer.Typer(help="Accounts.")
key_cmd = typer.Typer(help="API keys.")
vps_cmd = typer.Typer(help="The VPS inventory.")
app.add_typer(admin, name="admin")
admin.add_typer(account_cmd, name="account")
admin.add_typer(key_cmd, name="key")
admin.add_typer(vps_cmd, name="vps")
vps_cmd.command("import-libvirt")(import_libvirt)
add_client_commands(app)  # vps, snapshots, jobs: through the API, with the SDK

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error, one line: easy to grep
T = TypeVar("T")

DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (env VPSNAP_DATA_DIR).")
]


def load_settings(**overrides: Any) -> Settings:
    """Environment first, then whatever flags were given on the command line."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def run_admin(settings: Settings, action: Callable[[Runtime], Awaitable[T]]) -> T:
    async def main() -> T:
        runtime = Runtime.build(settings, role=Role.ADMIN)
        try:
            await runtime.prepare()
            return await action(runtime)
        finally:
            await runtime.close()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    data_dir: DataDirOption = None,
    demo: Annotated[bool, typer.Option("--demo", help="Create demo accounts and VPSes.")] = False,
) -> None:
    """Run API, job worker and scheduler in one process (SQLite in the data dir by default)."""
    from vpsnap.cli.serve import run_server  # noqa: PLC0415 - keeps admin commands light

    settings = load_settings(host=host, port=port, data_dir=data_dir)
    try:
        asyncio.run(run_server(settings, demo=demo))
    except DomainError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


@account_cmd.command("create")
def account_create(name: str, data_dir: DataDirOption = None) -> None:
    """Create an account."""
    account = run_admin(
        load_settings(data_dir=data_dir), lambda rt: rt.services.accounts.create_account(name)
    )
    out.print(f"created account {account.name} ({account.id})")


@key_cmd.command("create")
def key_create(
    account: Annotated[str, typer.Option(help="Account name.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated, e.g. read:vm,backup:vm.")],
    expires_in_days: Annotated[int | None, typer.Option(min=1)] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    try:
        parsed = parse_scopes(scopes)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    expires = timedelta(days=expires_in_days) if expires_in_days else None
    issued = run_admin(
        load_settings(data_dir=data_dir),
        lambda rt: rt.services.credentials.issue(account, parsed, expires),
    )
    err.print(f"key id {issued.key.id}, scopes {','.join(sorted(issued.key.scopes))}")
    if issued.key.expires_at:
        err.print(f"expires {issued.key.expires_at.isoformat()}")
    # The secret alone on stdout, so scripts can capture it.
    sys.stdout.write(issued.secret + "\n")


@key_cmd.command("revoke")
def key_revoke(key_id: str, data_dir: DataDirOption = None) -> None:
    """Revoke an API key by its id (key_…)."""
    run_admin(load_settings(data_dir=data_dir), lambda rt: rt.services.credentials.revoke(key_id))
    out.print(f"revoked {key_id}")


@vps_cmd.command("add")
def vps_add(
    account: Annotated[str, typer.Option(help="Account name.")],
    name: Annotated[str, typer.Option(help="VPS name, unique in the account.")],
    disk: Annotated[list[Path], typer.Option(help="qcow2 disk image; repeat for more disks.")],
    slots: Annotated[int, typer.Option(min=0, max=1000, help="Snapshot slots.")],
    node: Annotated[str | None, typer.Option(help="Hypervisor node.")] = None,
    primary_ip: Annotated[str | None, typer.Option("--primary-ip")] = None,
    memory_mib: Annotated[
        int | None,
        typer.Option("--memory-mib", min=16, help="A VM vpsnap starts and supervises: its RAM."),
    ] = None,
    cpus: Annotated[
        int | None, typer.Option(min=1, max=256, help="vCPUs of that VM (default 1).")
    ] = None,
    qemu_arg: Annotated[
        list[str] | None,
        typer.Option("--qemu-arg", help="Extra qemu-system argument of that VM; repeatable."),
    ] = None,
    qmp_socket: Annotated[
        Path | None,
        typer.Option("--qmp-socket", help="A VM someone else runs: its QMP socket (attach)."),
    ] = None,
    guest_agent_socket: Annotated[
        Path | None,
        typer.Option("--guest-agent-socket", help="That VM's guest-agent socket, if any."),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Register a VPS whose disks are qcow2 images on this node.

    Without --memory-mib or --qmp-socket it is disk images only (always stopped; snapshots with
    qemu-img). docs/vms.md explains managed and attached VMs.
    """
    settings = load_settings(data_dir=data_dir)
    try:
        machine = machine_from_options(
            memory_mib=memory_mib,
            cpus=cpus,
            qemu_args=qemu_arg or (),
            qmp_socket=qmp_socket,
            guest_agent_socket=guest_agent_socket,
        )
    except DomainError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(2) from None

    async def add(rt: Runtime) -> str:
        qemu_img = qemu_img_for(settings)
        paths = []
        for item in disk:
            path = item.resolve()
            if not path.is_file():
                raise DomainError(f"disk {item} does not exist (or is not a file)")
            found = await qemu_img.detect_format(path)
            if found != "qcow2":
                raise DomainError(
                    f"disk {item} is {found}, not qcow2: internal snapshots need qcow2 "
                    f"(convert with `qemu-img convert -O qcow2 {item} {item}.qcow2`)"
                )
            paths.append(str(path))
        vps = await rt.services.accounts.add_vps(
            NewVps(
                account_name=account,
                name=name,
                disks=tuple(paths),
                snapshot_slots=slots,
                node=node or settings.node,
                primary_ip=primary_ip,
                machine=machine,
            )
        )
        return vps.id

    vps_id = run_admin(settings, add)
    out.print(f"added {name} ({vps_id})")


@vps_cmd.command("list")
def vps_list(data_dir: DataDirOption = None) -> None:
    """Every VPS of every account."""
    rows = run_admin(load_settings(data_dir=data_dir), lambda rt: rt.services.accounts.list_vps())
    table = Table("id", "account", "name", "node", "slots", "status", "disks")
    for vps, account_name in rows:
        table.add_row(
            vps.id,
            account_name,
            vps.name,
            vps.node,
            str(vps.snapshot_slots),
            vps.service_status.value,
            "\n".join(vps.disks),
        )
    out.print(table)


@admin.command("reconcile")
def reconcile_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report only; change nothing.")
    ] = False,
    node: Annotated[str | None, typer.Option(help="Only VPSes of this node.")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Compare database and disks: mark vanished snapshots, remove vpsnap's own leftovers,
    report (never touch) snapshots vpsnap did not make."""
    from vpsnap.scheduler.reconcile import reconcile  # noqa: PLC0415 - admin-only import

    settings = load_settings(data_dir=data_dir)
    report = run_admin(
        settings, lambda rt: reconcile(rt.store, rt.hypervisor(), node, dry_run=dry_run)
    )
    table = Table("action", "vps", "snapshot", "detail", title="dry run" if dry_run else None)
    for finding in report.findings:
        table.add_row(
            finding.action.value, finding.vps_name, finding.snapshot or "", finding.detail
        )
    out.print(table if report.findings else "nothing to reconcile: database and disks agree")


if __name__ == "__main__":  # pragma: no cover
    app()
