"""``vpsnap admin account``: create and list accounts."""

from __future__ import annotations

from pathlib import Path

import click

from vpsnap.cli.commands.admin.common import admin_options, iso, load_settings, run_admin
from vpsnap.cli.output import Column, field, print_result, show


@click.group(no_args_is_help=True)
def group() -> None:
    """Accounts (each has its VPSes and API keys)."""


@group.command("create")
@click.argument("name")
@admin_options
def create(name: str, data_dir: Path | None) -> None:
    """Create an account."""
    account = run_admin(
        load_settings(data_dir=data_dir), lambda rt: rt.services.accounts.create_account(name)
    )
    document = {"id": account.id, "name": account.name, "createdAt": iso(account.created_at)}
    if not print_result(document):
        click.echo(f"created account {account.name} ({account.id})")


@group.command("list")
@admin_options
def list_(data_dir: Path | None) -> None:
    """Every account with its VPS count and usable keys."""
    rows = run_admin(
        load_settings(data_dir=data_dir), lambda rt: rt.services.accounts.list_accounts()
    )
    data = [
        {
            "id": r.account.id,
            "name": r.account.name,
            "createdAt": iso(r.account.created_at),
            "vpsCount": r.vps_count,
            "activeKeys": r.active_keys,
        }
        for r in rows
    ]
    columns = (
        Column("id", field("id")),
        Column("name", field("name")),
        Column("vps", field("vpsCount")),
        Column("keys", field("activeKeys")),
        Column("created", field("createdAt")),
    )
    show({"data": data}, data, columns)
