"""``vpsnap admin user``: dashboard users (create, list, disable, set-password).

Passwords are read from a hidden prompt or, for scripts, from standard input with
``--password-stdin``; never from an argument, which would land in shell history and ``ps``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vpsnap.cli.commands.admin.common import admin_options, iso, load_settings, run_admin
from vpsnap.cli.exit_codes import ExitCode
from vpsnap.cli.output import Column, field, print_result, show

ROLES = ("owner", "operator", "viewer")

password_stdin_option = click.option(
    "--password-stdin", is_flag=True, default=False, help="Read the password from stdin."
)


@click.group(no_args_is_help=True)
def group() -> None:
    """Dashboard users: who signs in to the web panel, with which role."""


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        click.echo("error: the password is empty", err=True)
        raise SystemExit(ExitCode.USAGE)
    return str(password)


@group.command("create")
@click.option("--account", required=True, help="Account name.")
@click.option("--email", required=True, help="Email address the user signs in with.")
@click.option(
    "--role",
    required=True,
    type=click.Choice(ROLES),
    help="owner: everything; operator: snapshots and power; viewer: read.",
)
@password_stdin_option
@admin_options
def create(
    account: str, email: str, role: str, password_stdin: bool, data_dir: Path | None
) -> None:
    """Create a dashboard user in an account."""
    from vpsnap.domain.users import Role  # noqa: PLC0415 - server-only import

    password = _read_password(password_stdin)
    user = run_admin(
        load_settings(data_dir=data_dir),
        lambda rt: rt.services.users.create(account, email, Role(role), password),
    )
    document = {"id": user.id, "email": user.email, "account": account, "role": user.role.value}
    if not print_result(document):
        click.echo(f"created {user.email} ({user.id}), {user.role.value} of {account}")


@group.command("list")
@click.option("--account", help="Only this account's users.")
@admin_options
def list_(account: str | None, data_dir: Path | None) -> None:
    """Every dashboard user (of one account with --account)."""
    rows = run_admin(load_settings(data_dir=data_dir), lambda rt: rt.services.users.list(account))
    data = [
        {
            "id": row.user.id,
            "email": row.user.email,
            "account": row.account_name,
            "role": row.user.role.value,
            "state": "disabled" if row.user.disabled_at else "active",
            "createdAt": iso(row.user.created_at),
        }
        for row in rows
    ]
    # The address identifies a user in every command: no id column by default (80 columns).
    columns = (
        Column("email", field("email")),
        Column("account", field("account")),
        Column("role", field("role")),
        Column("state", field("state")),
        Column("created", field("createdAt")),
    )
    show({"data": data}, data, columns)


@group.command("disable")
@click.argument("email")
@admin_options
def disable(email: str, data_dir: Path | None) -> None:
    """Disable a user: they cannot sign in, and their sessions end at once."""
    ended = run_admin(load_settings(data_dir=data_dir), lambda rt: rt.services.users.disable(email))
    if not print_result({"email": email, "endedSessions": ended}):
        click.echo(f"disabled {email}; ended {ended} session{'s' if ended != 1 else ''}")


@group.command("set-password")
@click.argument("email")
@password_stdin_option
@admin_options
def set_password(email: str, password_stdin: bool, data_dir: Path | None) -> None:
    """Set a user's password; their sessions end (they sign in again with the new one)."""
    password = _read_password(password_stdin)
    ended = run_admin(
        load_settings(data_dir=data_dir),
        lambda rt: rt.services.users.set_password(email, password),
    )
    if not print_result({"email": email, "endedSessions": ended}):
        click.echo(f"password of {email} changed; ended {ended} session{'s' if ended != 1 else ''}")
