"""``vpsnap admin``: operator administration, working directly on the database (and disks) of
a data dir; one module per group, loaded when used."""

from __future__ import annotations

import click

from vpsnap.cli.lazy import Lazy, LazyGroup

_A = "vpsnap.cli.commands.admin."

ADMIN_COMMANDS = {
    "account": Lazy(_A + "account", "Accounts: create, list."),
    "key": Lazy(_A + "key", "API keys: create, list, revoke."),
    "vps": Lazy(_A + "vps", "The VPS inventory: add, list, update, remove, import-libvirt."),
    "node": Lazy(_A + "node", "Hypervisor nodes: list, drain, undrain."),
    "user": Lazy(_A + "user", "Dashboard users: create, list, disable, set-password."),
    "demo": Lazy(_A + "demo", "The demo data: reset."),
    "reconcile": Lazy(_A + "reconcile", "Compare database and disks.", "command"),
    "audit": Lazy(_A + "audit", "The audit trail: who did what, when, from where.", "command"),
}


@click.group(cls=LazyGroup, lazy=ADMIN_COMMANDS, no_args_is_help=True)
def group() -> None:
    """Operator administration (works directly on the database of --data-dir, or of
    VPSNAP_DATABASE_URL; the server may be running)."""
