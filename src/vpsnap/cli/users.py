"""``vpsnap admin user …``: dashboard users (create, list, disable, set-password).

Passwords are read from a hidden prompt or, for scripts, from standard input with
``--password-stdin``; never from an argument, which would land in shell history and ``ps``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from vpsnap.domain.errors import DomainError
from vpsnap.domain.users import Role
from vpsnap.runtime import Runtime
from vpsnap.settings import Settings

user_cmd = typer.Typer(help="Dashboard users: who signs in to the web panel, with which role.")

out = Console()
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (env VPSNAP_DATA_DIR).")
]
PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from standard input (one line)."),
]


def _run(data_dir: Path | None, action: Callable[[Runtime], Awaitable[T]]) -> T:
    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)

    async def main() -> T:
        runtime = Runtime.build(settings)
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


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        err.print("[red]error:[/red] the password is empty")
        raise typer.Exit(2)
    return password


@user_cmd.command("create")
def user_create(
    account: Annotated[str, typer.Option(help="Account name.")],
    email: Annotated[str, typer.Option(help="Email address the user signs in with.")],
    role: Annotated[
        Role, typer.Option(help="owner: everything; operator: snapshots and power; viewer: read.")
    ],
    password_stdin: PasswordStdin = False,
    data_dir: DataDirOption = None,
) -> None:
    """Create a dashboard user in an account."""
    password = _read_password(password_stdin)
    user = _run(data_dir, lambda rt: rt.services.users.create(account, email, role, password))
    out.print(f"created {user.email} ({user.id}), {user.role.value} of {account}")


@user_cmd.command("list")
def user_list(
    account: Annotated[str | None, typer.Option(help="Only this account's users.")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Every dashboard user (of one account with --account)."""
    rows = _run(data_dir, lambda rt: rt.services.users.list(account))
    # The address identifies a user in every command, so no id column (it keeps the table
    # readable in 80 columns).
    table = Table("email", "account", "role", "state", "created")
    for row in rows:
        user = row.user
        state = "disabled" if user.disabled_at else "active"
        table.add_row(
            user.email, row.account_name, user.role.value, state, f"{user.created_at:%Y-%m-%d}"
        )
    out.print(table)


@user_cmd.command("disable")
def user_disable(email: str, data_dir: DataDirOption = None) -> None:
    """Disable a user: they cannot sign in, and their sessions end at once."""
    ended = _run(data_dir, lambda rt: rt.services.users.disable(email))
    out.print(f"disabled {email}; ended {ended} session{'s' if ended != 1 else ''}")


@user_cmd.command("set-password")
def user_set_password(
    email: str, password_stdin: PasswordStdin = False, data_dir: DataDirOption = None
) -> None:
    """Set a user's password; their sessions end (they sign in again with the new one)."""
    password = _read_password(password_stdin)
    ended = _run(data_dir, lambda rt: rt.services.users.set_password(email, password))
    out.print(f"password of {email} changed; ended {ended} session{'s' if ended != 1 else ''}")
