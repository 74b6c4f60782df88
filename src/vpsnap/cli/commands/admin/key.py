"""``vpsnap admin key``: create (shown once), list and revoke API keys."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from vpsnap.cli.commands.admin.common import admin_options, iso, load_settings, run_admin
from vpsnap.cli.output import Column, field, print_result, relative, show
from vpsnap.cli.state import UsageProblem, state
from vpsnap.domain.auth import parse_scopes


@click.group(no_args_is_help=True)
def group() -> None:
    """API keys: random, shown once, stored only as a hash."""


@group.command("create")
@click.option("--account", required=True, help="Account name.")
@click.option(
    "--scopes",
    required=True,
    help="Comma-separated: read:vm, write:vm, backup:vm, power:vm, write:all.",
)
@click.option("--name", help="What the key is for (shown by key list).")
@click.option("--expires-in-days", type=click.IntRange(min=1), help="Expire after this many days.")
@admin_options
def create(
    account: str, scopes: str, name: str | None, expires_in_days: int | None, data_dir: Path | None
) -> None:
    """Create an API key. The key alone goes to stdout (once; only its hash is stored), what
    it is to stderr, so scripts can capture it: KEY=$(vpsnap admin key create …)."""
    try:
        parsed = parse_scopes(scopes)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    expires = timedelta(days=expires_in_days) if expires_in_days else None
    issued = run_admin(
        load_settings(data_dir=data_dir),
        lambda rt: rt.services.credentials.issue(account, parsed, expires, name=name),
    )
    key = issued.key
    if state().format != "table":
        print_result(
            {
                "id": key.id,
                "name": key.name,
                "account": account,
                "scopes": sorted(key.scopes),
                "createdAt": iso(key.created_at),
                "expiresAt": iso(key.expires_at),
                "secret": issued.secret,
            }
        )
        return
    click.echo(f"key id {key.id}, scopes {','.join(sorted(key.scopes))}", err=True)
    if key.expires_at:
        click.echo(f"expires {key.expires_at.isoformat()}", err=True)
    sys.stdout.write(issued.secret + "\n")


@group.command("list")
@click.option("--account", help="Only this account's keys.")
@admin_options
def list_(account: str | None, data_dir: Path | None) -> None:
    """Every key (never its secret): id, name, account, scopes, created, expires, last used,
    state. Last use is recorded to within a minute."""
    rows = run_admin(
        load_settings(data_dir=data_dir), lambda rt: rt.services.credentials.list_keys(account)
    )
    now = datetime.now(UTC)
    data = []
    for row in rows:
        key = row.key
        status = "revoked" if key.revoked_at else "active" if key.is_usable(now) else "expired"
        data.append(
            {
                "id": key.id,
                "name": key.name,
                "account": row.account_name,
                "scopes": sorted(key.scopes),
                "createdAt": iso(key.created_at),
                "expiresAt": iso(key.expires_at),
                "lastUsedAt": iso(key.last_used_at),
                "revokedAt": iso(key.revoked_at),
                "status": status,
            }
        )
    columns = (
        Column("id", field("id")),
        Column("name", field("name")),
        Column("account", field("account")),
        Column("scopes", lambda r: ",".join(r["scopes"])),
        Column("created", field("createdAt")),
        Column("expires", field("expiresAt")),
        Column("last_used", lambda r: _ago(r["lastUsedAt"])),
        Column("status", field("status")),
    )
    show({"data": data}, data, columns)


def _ago(value: str | None) -> str:
    return "never" if value is None else relative(datetime.fromisoformat(value))


@group.command("revoke")
@click.argument("key_id", metavar="KEY_ID")
@admin_options
def revoke(key_id: str, data_dir: Path | None) -> None:
    """Revoke an API key by its id (key_…); servers stop accepting it within
    VPSNAP_AUTH_CACHE_SECONDS."""
    run_admin(load_settings(data_dir=data_dir), lambda rt: rt.services.credentials.revoke(key_id))
    if not print_result({"revoked": key_id}):
        click.echo(f"revoked {key_id}")
