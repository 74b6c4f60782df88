"""``vpsnap admin reconcile``: compare database and disks."""

from __future__ import annotations

from pathlib import Path

import click

from vpsnap.cli.commands.admin.common import admin_options, load_settings, run_admin
from vpsnap.cli.output import Column, field, print_result, show


@click.command("reconcile")
@click.option("--dry-run", is_flag=True, default=False, help="Report only; change nothing.")
@click.option("--node", help="Only VPSes of this node.")
@admin_options
def command(dry_run: bool, node: str | None, data_dir: Path | None) -> None:
    """Compare database and disks: mark vanished snapshots, remove vpsnap's own leftovers,
    report (never touch) snapshots vpsnap did not make."""
    from vpsnap.scheduler.reconcile import reconcile  # noqa: PLC0415 - only this command

    settings = load_settings(data_dir=data_dir)
    report = run_admin(
        settings, lambda rt: reconcile(rt.store, rt.hypervisor(), node, dry_run=dry_run)
    )
    data = [
        {
            "action": f.action.value,
            "vps": f.vps_name,
            "snapshot": f.snapshot,
            "detail": f.detail,
        }
        for f in report.findings
    ]
    columns = (
        Column("action", field("action")),
        Column("vps", field("vps")),
        Column("snapshot", field("snapshot")),
        Column("detail", field("detail")),
    )
    if not data and not print_result({"dryRun": dry_run, "findings": []}):
        click.echo("nothing to reconcile: database and disks agree")
        return
    if not data:
        return
    show({"dryRun": dry_run, "findings": data}, data, columns, title="dry run" if dry_run else None)
